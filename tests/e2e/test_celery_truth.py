"""What Celery shows about a run tells the truth (issue 13): states, signals, events, progress.

One failing run on the shared workers, read through every channel a Celery user watches:
the result backend, the workers' events (what Flower shows), and signals connected in the
workers themselves (:mod:`tests.signal_recorder`).
"""

from __future__ import annotations

import time

import pytest

from dbt_celery.core.plan import consumer_task_id, producer_task_id
from dbt_celery.core.records import PASSING_STATES
from dbt_celery.errors import BuildFailed
from dbt_celery.run import submit
from tests import signal_recorder
from tests.e2e.test_watcher import RUN_TIMEOUT, watcher_spec
from tests.helpers import CeleryEvents, copy_project

#: The watchdog announces a run's end on its next round (every 15 s).
ANNOUNCE_TIMEOUT = 40


@pytest.fixture(scope="module")
def failing_run(redis_workers, redis_app, tmp_path_factory):
    """One run where ``broken`` fails and ``broken_child`` never builds; everything Celery said about it."""
    tmp_path = tmp_path_factory.mktemp("truth")
    project = copy_project("watcher", tmp_path)
    spec = watcher_spec(
        project, tmp_path / "w.duckdb", vars={"fail_broken": True}, exclude=("flaky", "flaky_child"), retries=0
    )
    signals = redis_workers.env["DBT_CELERY_TEST_SIGNALS"]
    with CeleryEvents(redis_app) as events:
        run = submit(spec, app=redis_app)
        status = run.wait(RUN_TIMEOUT)
        deadline = time.monotonic() + ANNOUNCE_TIMEOUT
        while not any(e["type"] == "dbt-run-finished" and e["run_id"] == run.id for e in events.events):
            assert time.monotonic() < deadline, "no dbt-run-finished event"
            time.sleep(0.5)
    # The signal is sent before the event, in the same worker: it is on file by now.
    return run, status, events, signal_recorder.read(signals)


def test_every_node_that_did_not_pass_ends_its_task_in_failure_once(failing_run, redis_app):
    run, status, events, signals = failing_run
    assert status.state == "failed"
    failed = {uid for uid, node in status.nodes.items() if node.status not in PASSING_STATES}
    assert failed >= {"model.watcher.broken", "model.watcher.broken_child"}
    states = {r.id: r.state for r in run.results().results}
    for uid in status.nodes:
        task_id = consumer_task_id(run.id, uid)
        task_failed = events.of(task_id, "task-failed")
        failures = [s for s in signals if s["signal"] == "task_failure" and s["task_id"] == task_id]
        if uid in failed:
            assert states[task_id] == "FAILURE", uid
            assert len(task_failed) == 1 and uid in task_failed[0]["exception"], (uid, task_failed)
            assert len(failures) == 1 and uid in failures[0]["exception"], (uid, failures)
        else:
            assert states[task_id] == "SUCCESS", uid
            assert task_failed == [] and failures == []
    child = events.of(consumer_task_id(run.id, "model.watcher.broken_child"), "task-failed")[0]
    assert "UpstreamFailed" in child["exception"] and "model.watcher.broken" in child["exception"]


def test_the_producer_task_fails_when_dbt_failed_and_carries_its_summary(failing_run, redis_app):
    run, _, events, signals = failing_run
    result = redis_app.AsyncResult(producer_task_id(run.id))
    assert result.state == "FAILURE"
    assert isinstance(result.result, BuildFailed)
    assert result.result.summary["dbt_success"] is False
    assert result.result.summary["nodes"] == result.result.summary["reported"]
    assert [s for s in signals if s["signal"] == "task_failure" and s["task_id"] == producer_task_id(run.id)]
    assert events.of(producer_task_id(run.id), "task-failed")


def test_the_producer_reports_progress_flower_can_show(failing_run):
    run, status, events, _ = failing_run
    progress = events.of(producer_task_id(run.id), "task-progress")
    assert progress, "no task-progress event"
    assert all(p["total"] == len(status.nodes) for p in progress)
    assert progress[-1]["done"] == len(status.nodes)
    assert [p["done"] for p in progress] == sorted(p["done"] for p in progress)


def test_run_level_signals_and_events_say_when_a_run_starts_and_ends(failing_run):
    run, status, events, signals = failing_run
    (started,) = [s for s in signals if s["signal"] == "run_started" and s["run_id"] == run.id]
    assert started["total"] == len(status.nodes)
    (finished,) = [s for s in signals if s["signal"] == "run_finished" and s["run_id"] == run.id]
    assert finished["state"] == "failed"
    assert finished["counts"]["failed"] == 1 and finished["counts"]["upstream_failed"] >= 1
    assert sum(finished["counts"].values()) == len(status.nodes)
    (event,) = [e for e in events.events if e["type"] == "dbt-run-finished" and e["run_id"] == run.id]
    assert event["counts"] == finished["counts"]
    assert [e for e in events.events if e["type"] == "dbt-run-started" and e["run_id"] == run.id]
