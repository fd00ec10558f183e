"""A real ``celery beat`` starting the audited project every 2 s while one build takes far longer.

Beat reads a ``beat_schedule`` entry in the README's form from a settings module of its
own; the session's standalone workers run what it sends (``dbt_celery.start_run`` on the
light control queue, the build on the producer queue). What a user would check: the
scheduled runs succeed, the ticks during a build were skipped and say why in their Celery
results, and the audit table shows no two builds at once and no pile-up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from celery import Celery
from celery.result import AsyncResult

from dbt_celery.celery.backends import store_for
from dbt_celery.celery.queues import CONTROL_QUEUE
from dbt_celery.core.spec import RunSpec
from dbt_celery.run import DbtRun
from tests.faults.fault_fixtures import AUDITED_PROJECT, POSTGRES, Audit
from tests.helpers import copy_project

#: Seconds between two ticks; one build of the audited project takes several times longer.
EVERY = 2.0
#: Seconds each audited model sleeps in PostgreSQL (four models on its longest path).
SLEEP = 1.5
#: Seconds the test waits for the runs and ticks it needs.
PATIENCE = 180.0


def beat_settings(directory: Path, spec: RunSpec) -> str:
    """Write a settings module for beat: the standalone settings plus one schedule entry."""
    (directory / "beat_settings.py").write_text(
        textwrap.dedent(f"""\
            from dbt_celery import RunSpec
            from dbt_celery.celery.config import settings_from_env

            globals().update(settings_from_env())
            _spec = RunSpec.from_dict({json.loads(spec.to_json())!r})
            beat_schedule = {{
                "audited": {{"task": "dbt_celery.start_run", "schedule": {EVERY}, "kwargs": {{"spec": _spec.to_dict()}}}},
            }}
        """)
    )
    return "beat_settings"


def tick_results(app: Celery, redis_client: Any, project_dir: str) -> tuple[list[dict], list[dict]]:
    """The Celery results of this project's start_run ticks: (started, skipped), as the backend holds them."""
    store = store_for(app)
    started, skipped = [], []
    for key in redis_client.scan_iter("celery-task-meta-*"):
        result = AsyncResult(key.decode().removeprefix("celery-task-meta-"), app=app)
        value = result.result if result.state == "SUCCESS" else None
        if not isinstance(value, dict) or set(value) != {"run_id", "skipped", "reason", "cancelled"}:
            continue
        if value["skipped"]:
            skipped.append(value)
        elif (run := store.run(value["run_id"])) is not None and run.spec["project_dir"] == project_dir:
            started.append(value)
    ours = {tick["run_id"] for tick in started}
    return started, [tick for tick in skipped if tick["reason"].split()[1] in ours]


def test_beat_skips_ticks_while_a_scheduled_run_builds(
    redis_workers, redis_app, redis_client, worker_env, audit, tmp_path
):
    project = copy_project(AUDITED_PROJECT, tmp_path)
    spec = RunSpec(
        project_dir=str(project),
        profile={**POSTGRES, "type": "postgres", "schema": audit.schema},
        vars={"audit_table": audit.table, "sleep": SLEEP},
    )
    env = {**os.environ, **worker_env, "CELERY_CONFIG_MODULE": beat_settings(tmp_path, spec)}
    command = [sys.executable, "-m", "celery", "-A", "dbt_celery", "beat", "--schedule",
               str(tmp_path / "celerybeat-schedule"), "--max-interval", "1", "--loglevel", "INFO"]  # fmt: skip
    with open(tmp_path / "beat.log", "wb") as log:
        beat = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + PATIENCE
        while True:  # two runs started (the second after the first ended), ticks skipped in between
            started, skipped = tick_results(redis_app, redis_client, spec.project_dir)
            if len(started) >= 2 and len(skipped) >= 2:
                break
            redis_workers.check()
            assert beat.poll() is None, (tmp_path / "beat.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"after {PATIENCE} s: {started=} {skipped=}"
            time.sleep(0.5)
    finally:
        beat.send_signal(signal.SIGTERM)
        beat.wait(30)
    deadline = time.monotonic() + 30
    while redis_client.llen(CONTROL_QUEUE) and time.monotonic() < deadline:  # a tick sent as beat stopped
        time.sleep(0.2)
    time.sleep(0.5)  # ... and taken but not yet answered
    started, skipped = tick_results(redis_app, redis_client, spec.project_dir)
    statuses = [DbtRun.restore(tick["run_id"], app=redis_app).wait(PATIENCE) for tick in started]

    # The scheduled runs built every model, and their consumers say so.
    assert [status.state for status in statuses] == ["success"] * len(started)
    assert {status.nodes["model.audited.e"].status for status in statuses} == {"success"}
    # The ticks during a build were skipped, each naming the run that was still going.
    for tick in skipped:
        assert tick["run_id"] is None and tick["cancelled"] == []
        assert tick["reason"].startswith("run ") and tick["reason"].endswith(" of the same target is still running")
    # No pile-up: one dbt build per started run, one after the other; no model built twice at once.
    assert audit.overlaps() == [] and audit.unfinished() == []
    assert audit.builds_per_node() == dict.fromkeys("abcdefg", len(started))
    spans = sorted(_invocation_spans(audit))
    assert len(spans) == len(started)
    assert all(end < next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), spans


def _invocation_spans(audit: Audit) -> list[tuple[Any, Any]]:
    """(first start, last end) of every dbt invocation that built into the audit's schema."""
    spans: dict[str, tuple[Any, Any]] = {}
    for row in audit.rows():
        start, end = spans.get(row.invocation_id, (row.at, row.at))
        spans[row.invocation_id] = (min(start, row.at), max(end, row.at))
    return list(spans.values())
