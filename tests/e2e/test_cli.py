"""The README's main command on the embedded default, and the CLI's error paths."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import duckdb

from tests.helpers import REPO, copy_project


def dbt_celery_raw(
    command: list[str], env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")}
    return subprocess.run(command, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=timeout)


def dbt_celery(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return dbt_celery_raw([sys.executable, "-m", "dbt_celery.cli", *args], env, timeout)


def test_embedded_default_builds_the_example_with_live_progress(tmp_path):
    """The README's main command, in a terminal: live progress, final table, tables built."""
    project = copy_project(REPO / "examples" / "jaffle_shop", tmp_path)
    env = {"DBT_CELERY_STATE_DIR": str(tmp_path / "state"), "CELERY_CONFIG_MODULE": "dbt_celery.celery.no_config"}
    command = shlex.join([sys.executable, "-m", "dbt_celery.cli", "run", str(project)])
    screen = tmp_path / "screen.txt"
    # `script` gives the command a pseudo-terminal, so rich draws its live display.
    result = dbt_celery_raw(["script", "-q", "-e", "-c", command, str(screen)], env={**env, "COLUMNS": "140"})

    assert result.returncode == 0, screen.read_text(errors="replace")[-3000:]
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.read_text(errors="replace"))
    frames = re.findall(r"(running|planning|queued) .*? (\d+)/27 (\d+) ok", text)
    assert frames, "no live progress frame was drawn"
    assert any(int(done) < 27 for _, done, _ in frames), "progress never showed a run in flight"
    assert re.search(r"dbt-celery run [0-9a-f-]{36}: success", text)
    assert re.search(r"customers\s+│ model\s+│ success", text)
    with duckdb.connect(str(project / "jaffle_shop.duckdb"), read_only=True) as connection:
        assert connection.execute("select count(*) from customers").fetchone()[0] == 50
        assert connection.execute("select count(*) from orders").fetchone()[0] == 200

    # The run can be read back from another process.
    run_id = re.search(r"run ([0-9a-f-]{36}) submitted", text).group(1)
    status = dbt_celery("status", run_id, "--json", env=env)
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert document["status"] == "success" and len(document["nodes"]) == 27
    assert {node["status"] for node in document["nodes"].values()} == {"success"}
    assert document["nodes"]["model.jaffle_shop.customers"]["resolved_by"] == "producer"
    # Its artifacts, and a retry that finds nothing to do, from further processes.
    written = dbt_celery("artifacts", run_id, "--out", str(tmp_path / "artifacts"), env=env)
    assert written.returncode == 0, written.stderr
    results = json.loads((tmp_path / "artifacts" / "run_results.json").read_text())["results"]
    assert len(results) == 27 and (tmp_path / "artifacts" / "manifest.json").is_file()
    retried = dbt_celery("retry", run_id, env=env)
    assert retried.returncode == 0 and "nothing to retry" in retried.stderr, retried.stderr
    # Nothing of the embedded broker is left behind.
    assert not any((tmp_path / "state" / "broker").iterdir())


def test_bad_input_gets_one_clear_line(tmp_path):
    missing = dbt_celery("run", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert "dbt project directory not found" in missing.stderr
    bad_vars = dbt_celery("run", str(REPO / "examples" / "jaffle_shop"), "--vars", "[1, 2")
    assert bad_vars.returncode == 2
    assert "--vars" in bad_vars.stderr
    no_state = dbt_celery("run", str(REPO / "examples" / "jaffle_shop"), "--state", str(tmp_path), "--defer")
    assert no_state.returncode == 2 and "has no manifest.json" in " ".join(no_state.stderr.split()), no_state.stderr
    freshness = dbt_celery("conformance", str(REPO / "examples" / "jaffle_shop"), "--source-freshness")
    assert freshness.returncode == 2 and "checks no source freshness" in " ".join(freshness.stderr.split())
    assert "Traceback" not in missing.stderr + bad_vars.stderr + no_state.stderr + freshness.stderr


def test_conformance_command_on_a_project_it_has_never_seen(tmp_path):
    project = copy_project(REPO / "examples" / "jaffle_shop", tmp_path)
    env = {"DBT_CELERY_STATE_DIR": str(tmp_path / "state"), "CELERY_CONFIG_MODULE": "dbt_celery.celery.no_config"}
    result = dbt_celery("conformance", str(project), "--json", env=env)

    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report == {**report, "ok": True, "nodes": 27, "differences": []}


def test_no_wait_prints_the_run_id_and_status_follows_it(redis_workers, worker_env, tmp_path):
    project = copy_project("watcher", tmp_path)
    profile = json.dumps({"type": "duckdb", "path": str(tmp_path / "w.duckdb")})
    started = dbt_celery(
        "run", str(project), "--profile-json", profile, "--select", "+slow_a", "--no-wait",
        "--vars", '{"slow_rows": 600000000}', env=worker_env,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    # Planning alone (a dbt parse on the worker) outlasts the start of this command: the run is not over.
    early = dbt_celery("status", run_id, "--json", env=worker_env)
    assert early.returncode == 3, early.stderr  # still running: not a failure
    assert json.loads(early.stdout)["status"] in ("queued", "planning", "running")

    from dbt_celery.celery.config import create_app, settings_from_env
    from dbt_celery.run import DbtRun

    DbtRun.restore(run_id, app=create_app(settings_from_env(worker_env))).wait(120)
    shown = dbt_celery("status", run_id, env=worker_env)
    assert shown.returncode == 0, shown.stderr
    assert "success" in shown.stdout and "base" in shown.stdout
    document = json.loads(dbt_celery("status", run_id, "--json", env=worker_env).stdout)
    for node in document["nodes"].values():
        for field in ("started_at", "finished_at", "recorded_at"):
            assert node[field].endswith("+00:00"), (field, node[field])  # ISO 8601 with its zone


def test_bad_input_found_on_the_worker_gets_one_line_and_exit_2(redis_workers, worker_env, tmp_path):
    """A selector dbt rejects is only found by the producer, on the worker: same rules as client-side input."""
    project = copy_project("watcher", tmp_path)
    profile = json.dumps({"type": "duckdb", "path": str(tmp_path / "w.duckdb")})
    result = dbt_celery("run", str(project), "--profile-json", profile, "--select", "no_such_model", env=worker_env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "selection" in result.stderr and "no_such_model" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_a_bad_app_or_an_unreachable_store_is_one_line(tmp_path):
    bad_app = dbt_celery("status", "some-run", "--app", "no_such_module:app")
    assert bad_app.returncode == 2 and "cannot load the Celery app" in bad_app.stderr
    # Nothing listens on port 1: the store call gives up after its patience, with one line.
    down = {
        "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
        "CELERY_CONFIG_MODULE": "dbt_celery.celery.no_config",
        "DBT_CELERY_STORE_PATIENCE": "2",
    }
    gone = dbt_celery("status", "some-run", env=down, timeout=120)
    assert gone.returncode == 2 and "unreachable" in gone.stderr
    assert "Traceback" not in bad_app.stderr + gone.stderr
