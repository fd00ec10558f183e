"""The README's main command on the embedded default, and the CLI's error paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import duckdb

from conftest import REPO, copy_project


def dbt_celery(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")}
    return subprocess.run(
        [sys.executable, "-m", "dbt_celery.cli", *args], env={**clean, **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_embedded_default_builds_the_example_with_nothing_started(tmp_path):
    project = copy_project(REPO / "examples" / "jaffle_shop", tmp_path)
    env = {"DBT_CELERY_STATE_DIR": str(tmp_path / "state"), "CELERY_CONFIG_MODULE": "dbt_celery._no_config"}
    result = dbt_celery("run", str(project), "--json", env=env)

    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(result.stdout)
    assert document["status"] == "success"
    assert len(document["nodes"]) == 27
    assert {node["status"] for node in document["nodes"].values()} == {"success"}
    with duckdb.connect(str(project / "jaffle_shop.duckdb"), read_only=True) as connection:
        assert connection.execute("select count(*) from customers").fetchone()[0] == 50
        assert connection.execute("select count(*) from orders").fetchone()[0] == 200

    # The run can be read back from another process, as `dbt-celery status` does.
    status = dbt_celery("status", document["run_id"], "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["nodes"] == document["nodes"]
    # Nothing of the embedded broker is left behind.
    assert not any((tmp_path / "state" / "broker").iterdir())


def test_bad_input_gets_one_clear_line(tmp_path):
    missing = dbt_celery("run", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert "dbt project directory not found" in missing.stderr
    bad_vars = dbt_celery("run", str(REPO / "examples" / "jaffle_shop"), "--vars", "[1, 2")
    assert bad_vars.returncode == 2
    assert "--vars" in bad_vars.stderr
    assert "Traceback" not in missing.stderr + bad_vars.stderr


def test_conformance_command_on_a_project_it_has_never_seen(tmp_path):
    project = copy_project(REPO / "examples" / "jaffle_shop", tmp_path)
    env = {"DBT_CELERY_STATE_DIR": str(tmp_path / "state"), "CELERY_CONFIG_MODULE": "dbt_celery._no_config"}
    result = dbt_celery("conformance", str(project), "--json", env=env)

    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report == {**report, "ok": True, "nodes": 27, "differences": []}


def test_no_wait_prints_the_run_id_and_status_follows_it(redis_workers, worker_env, tmp_path):
    project = copy_project("watcher", tmp_path)
    profile = json.dumps({"type": "duckdb", "path": str(tmp_path / "w.duckdb")})
    started = dbt_celery("run", str(project), "--profile-json", profile, "--select", "base", "--no-wait", env=worker_env)
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()

    from dbt_celery.config import create_app, settings_from_env
    from dbt_celery.run import DbtRun

    DbtRun.restore(run_id, app=create_app(settings_from_env(worker_env))).wait(120)
    shown = dbt_celery("status", run_id, env=worker_env)
    assert shown.returncode == 0, shown.stderr
    assert "success" in shown.stdout and "base" in shown.stdout
