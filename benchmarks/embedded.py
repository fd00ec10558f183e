"""The embedded default against plain dbt: ``dbt-celery run examples/jaffle_shop`` vs ``dbt build``.

Command line against command line, as a user types them, on a copy of the example
project (one untimed ``dbt parse`` first, so both start with the same partial-parse
state). No broker in the environment: ``dbt-celery run`` starts its own two workers on
a file broker and a SQLite store under ``DBT_CELERY_STATE_DIR``, runs, and stops them.

Each pair gets a fresh state folder and runs, in alternating order, the plain build and
two dbt-celery runs: the first on the empty folder (the SQLite store is created), the
second on the folder the first left. Every build writes to the same DuckDB file
(``DBT_DUCKDB_PATH``, which the example's profile reads), removed before each build: a
new path per build would change dbt's profile hash and force a full parse every time.

Phases of a dbt-celery run come from its records, read from the SQLite store afterwards:
``startup`` command start → producer task starts (interpreter, imports, both workers
started, run submitted), ``plan`` → first node starts (parse, select, plan), ``nodes``
first node start → last node finish, ``tail`` → last consumer outcome, ``exit`` → the
command returns (last status read, table printed, workers stopped).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

from benchmarks.measure import _results_span, dbt_env, fresh_db, run_timed, when
from dbt_celery.celery.backends import store_for
from dbt_celery.celery.config import create_app, embedded_settings, settings_from_env

REPO = Path(__file__).resolve().parents[1]
JAFFLE_SHOP = REPO / "examples" / "jaffle_shop"
#: The target of the issue: embedded dbt-celery run / plain dbt build.
TARGET_RATIO = 1.3
#: What the copy leaves out: build output, local databases, a file broker's control folder.
_IGNORED = ("target", "logs", "dbt_packages", "*.duckdb", "*.duckdb.wal", "control", ".dbt-celery", "*.user.yml")
#: Variables that would point dbt-celery away from the embedded default (or dbt at another target).
_CLEARED = ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "CELERY_CONFIG_MODULE", "DBT_TARGET", "DBT_PROFILES_DIR")


def prepare(root: Path) -> Path:
    """Copy the example project into ``root`` and parse it once (untimed); return the copy."""
    project = root / "jaffle_shop"
    shutil.copytree(JAFFLE_SHOP, project, ignore=shutil.ignore_patterns(*_IGNORED))
    done = run_timed(_dbt_command("parse", project), project, _env(database(root)))
    if done.returncode != 0:
        raise RuntimeError(f"dbt parse of {project} failed:\n{done.output[-3000:]}")
    return project


def database(root: Path) -> Path:
    """The one DuckDB file every build of the comparison writes (emptied before each)."""
    return root / "jaffle_shop.duckdb"


def measure_embedded(root: Path, pairs: int, log: Callable[[str], None]) -> dict[str, Any]:
    """``pairs`` alternating pairs of plain build / first and second embedded run; the raw numbers."""
    project = prepare(root)
    data: dict[str, Any] = {"project": "examples/jaffle_shop", "pairs": pairs, "cli": [], "first": [], "second": []}
    for pair in range(pairs):
        state = root / f"state-{pair}"
        steps = ["cli", "first", "second"] if pair % 2 == 0 else ["first", "second", "cli"]
        for step in steps:
            db = fresh_db(database(root))
            result = measure_plain(project, db) if step == "cli" else measure_run(project, db, state)
            data[step].append(result)
            fresh_db(db)
            log(f"  embedded pair {pair + 1}: {step:6} {result['wall']:.2f} s")
        shutil.rmtree(state, ignore_errors=True)
    data["summary"] = summarize_embedded(data)
    return data


def measure_plain(project: Path, db: Path) -> dict[str, Any]:
    """One plain ``dbt build`` of the project as a new process."""
    done = run_timed(_dbt_command("build", project), project, _env(db))
    if done.returncode != 0:
        raise RuntimeError(f"plain dbt build of {project} failed ({done.returncode}):\n{done.output[-3000:]}")
    span = _results_span(project / "target" / "run_results.json")
    return {
        "wall": done.wall,
        "cpu": done.cpu,
        "peak_rss": done.peak_rss,
        "nodes": span["count"],
        "phases": {
            "startup": span["first_start"] - done.started_at,
            "nodes": span["span"],
            "exit": done.ended_at - (span["first_start"] + span["span"]),
        },
    }


def measure_run(project: Path, db: Path, state: Path) -> dict[str, Any]:
    """One ``dbt-celery run PROJECT --json`` on the embedded default, with its phases from the run's records."""
    first = not state.exists()
    command = [str(Path(sys.executable).with_name("dbt-celery")), "run", str(project), "--json"]
    done = run_timed(command, project, {**_env(db), "DBT_CELERY_STATE_DIR": str(state)}, split_stderr=True)
    try:
        document = json.loads(done.output)
    except json.JSONDecodeError:
        document = {}
    if done.returncode != 0 or document.get("status") != "success":
        raise RuntimeError(
            f"dbt-celery run of {project} ended {done.returncode} {document.get('status')}:\n"
            f"{done.errors[-3000:]}\n{done.output[-2000:]}"
        )
    nodes = document["nodes"].values()
    starts = [when(node["started_at"]) for node in nodes if node.get("started_at")]
    finishes = [when(node["finished_at"]) for node in nodes if node.get("finished_at")]
    recorded = [when(node["recorded_at"]) for node in nodes if node.get("recorded_at")]
    producer_started = _producer_started_at(state, document["run_id"])
    return {
        "wall": done.wall,
        "cpu": done.cpu,
        "peak_rss": done.peak_rss,
        "nodes": len(document["nodes"]),
        "fresh_state": first,
        "phases": {
            "startup": producer_started - done.started_at,
            "plan": min(starts) - producer_started,
            "nodes": max(finishes) - min(starts),
            "tail": max(recorded) - max(finishes),
            "exit": done.ended_at - max(recorded),
        },
    }


def summarize_embedded(data: dict[str, Any]) -> dict[str, Any]:
    """Medians and ratios (median of the per-pair ratios) for the first and the second run."""
    cli = [m["wall"] for m in data["cli"]]
    summary: dict[str, Any] = {"cli_median": statistics.median(cli), "nodes": data["cli"][0]["nodes"]}
    for step in ("first", "second"):
        walls = [m["wall"] for m in data[step]]
        pairs = [run / plain for run, plain in zip(walls, cli)]
        summary[step] = {
            "median": statistics.median(walls),
            "ratio": statistics.median(pairs),
            "pairs": pairs,
            "phases": {
                name: statistics.median(m["phases"][name] for m in data[step]) for name in data[step][0]["phases"]
            },
            "cpu": statistics.median(m["cpu"] for m in data[step]),
            "peak_rss": max(m["peak_rss"] for m in data[step]),
        }
    summary["cli_phases"] = {
        name: statistics.median(m["phases"][name] for m in data["cli"]) for name in data["cli"][0]["phases"]
    }
    summary["cli_cpu"] = statistics.median(m["cpu"] for m in data["cli"])
    summary["cli_peak_rss"] = max(m["peak_rss"] for m in data["cli"])
    return summary


def _producer_started_at(state: Path, run_id: str) -> float:
    """When the run's producer task started, from the SQLite store the embedded run left in ``state``."""
    settings = {**settings_from_env({}), **embedded_settings(state, state / "bench-reader")}
    app = create_app(settings)
    try:
        producer = store_for(app).producer(run_id)
    finally:
        app.close()
    if producer is None or producer.started_at is None:
        raise RuntimeError(f"run {run_id} left no producer start in {state}")
    return producer.started_at


def _dbt_command(command: str, project: Path) -> list[str]:
    dbt = str(Path(sys.executable).with_name("dbt"))
    return [dbt, command, "--project-dir", str(project), "--profiles-dir", str(project)]


def _env(db: Path) -> dict[str, str]:
    env = {
        name: value for name, value in os.environ.items() if name not in _CLEARED and not name.startswith("DBT_CELERY_")
    }
    return {**env, **dbt_env(), "DBT_DUCKDB_PATH": str(db)}
