"""The watcher end to end: real Redis, real worker processes, real dbt on DuckDB.

Each test is one run of a tiny project (or the example); every run is bounded by a
timeout so that a consumer waiting forever fails the test loudly.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import duckdb
import pytest

from dbt_celery.celery.backends import store_for
from dbt_celery.celery.messages import send_consumer
from dbt_celery.core.plan import GraphNode, consumer_task_id, producer_task_id
from dbt_celery.core.records import NodeState, epoch_seconds
from dbt_celery.core.spec import RunSpec
from dbt_celery.dbt.producer import DuplicateProducer, run_producer
from dbt_celery.run import DbtRun, submit
from tests.helpers import REPO, CeleryEvents, copy_project, wait_for

RUN_TIMEOUT = 120


def watcher_spec(project: Path, db: Path, **options) -> RunSpec:
    return RunSpec(project_dir=str(project), profile={"type": "duckdb", "path": str(db)}, **options)


def tables(db: Path) -> set[str]:
    with duckdb.connect(str(db), read_only=True) as connection:
        return {row[0] for row in connection.execute("select table_name from information_schema.tables").fetchall()}


@pytest.fixture
def watcher_project(tmp_path: Path) -> Path:
    return copy_project("watcher", tmp_path)


def test_example_builds_every_node_through_the_backend(redis_workers, redis_app, redis_client, tmp_path):
    project = copy_project(REPO / "examples" / "jaffle_shop", tmp_path)
    db = tmp_path / "jaffle.duckdb"
    redis_client.config_set("notify-keyspace-events", "K$")
    pubsub = redis_client.pubsub()
    run = submit(watcher_spec(project, db), app=redis_app)
    pubsub.psubscribe(f"__keyspace@*__:dbt-celery-{run.id}-nodefinished_*")
    status = run.wait(RUN_TIMEOUT)
    time.sleep(0.2)
    writes = 0
    while (message := pubsub.get_message(timeout=0.1)) is not None:
        writes += message["type"] == "pmessage"

    assert status.state == "success", status.to_dict()
    assert len(status.nodes) == 27
    assert {node.status for node in status.nodes.values()} == {"success"}
    warned = [node.name for node in status.nodes.values() if node.dbt_status == "warn"]
    assert warned == ["not_null_customers_first_order"]  # severity: warn counts as success
    assert {"customers", "orders", "stg_orders", "raw_payments", "orders_snapshot"} <= tables(db)

    # Each record is zlib-compressed, base64-encoded JSON under a run-scoped key.
    raw = redis_client.get(f"dbt-celery-{run.id}-nodefinished_model.jaffle_shop.customers")
    record = json.loads(zlib.decompress(base64.b64decode(raw)))
    assert record["unique_id"] == "model.jaffle_shop.customers"
    assert record["dbt_status"] == "success" and record["outcome"] == "success"
    assert record["resolved_by"] == "producer" and record["finished_at"]
    # One write per node: the producer never rewrites a growing blob.
    assert 0 < writes <= len(status.nodes)
    pubsub.close()
    redis_client.config_set("notify-keyspace-events", "")  # leave the shared server as it was


def test_transient_failure_is_repaired_by_the_fallback(redis_workers, redis_app, watcher_project, tmp_path):
    repair_a_transient_failure(redis_app, watcher_project, tmp_path, check=redis_workers.check)


def repair_a_transient_failure(app, project: Path, tmp_path: Path, check=None) -> None:
    """A model fails in the producer's build, its cause goes away, and its retry rebuilds it inline.

    Shared with the RabbitMQ tests: the same run must end the same way on either broker.
    """
    flag = tmp_path / "flag"
    flag.touch()
    spec = watcher_spec(
        project, tmp_path / "w.duckdb", vars={"flag_file": str(flag)}, retries=1, retry_delay=3.0,
        select=("+flaky_child+",),
    )  # fmt: skip
    run = submit(spec, app=app)
    store = store_for(app)
    event = wait_for(
        lambda: store.node_event(run.id, "model.watcher.flaky"), RUN_TIMEOUT, "the flaky model's record",
        check=check, interval=0.05,
    )  # fmt: skip
    assert event.outcome is NodeState.FAILED
    flag.unlink()  # the cause goes away before the retry falls back
    status = run.wait(RUN_TIMEOUT)

    assert status.state == "success", status.to_dict()
    assert {node.name: (node.status, node.resolved_by) for node in status.nodes.values()} == {
        "base": ("success", "producer"),
        "flaky": ("success", "fallback"),
        "flaky_child": ("success", "fallback"),
        "not_null_flaky_child_id": ("success", "fallback"),  # a test on a rebuilt model is rebuilt too
    }
    outcomes = store.outcomes(run.id, status.nodes)
    assert outcomes["model.watcher.flaky"].retries == 1
    assert all(outcome.retries <= spec.retries for outcome in outcomes.values())
    assert {"base", "flaky", "flaky_child"} <= tables(tmp_path / "w.duckdb")


def test_cli_reports_a_permanent_failure_and_its_descendants(redis_workers, worker_env, watcher_project, tmp_path):
    profile = json.dumps({"type": "duckdb", "path": str(tmp_path / "w.duckdb")})
    command = [
        sys.executable, "-m", "dbt_celery.cli", "run", str(watcher_project), "--profile-json", profile,
        "--vars", '{"fail_broken": true}', "--exclude", "flaky", "flaky_child", "--json", "--timeout", "120",
    ]  # fmt: skip
    result = subprocess.run(
        command, env={**os.environ, **worker_env}, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )

    assert result.returncode == 1, result.stderr
    document = json.loads(result.stdout)
    nodes = document["nodes"]
    assert document["status"] == "failed"
    assert nodes["model.watcher.broken"]["status"] == "failed"
    assert nodes["model.watcher.broken"]["reason"] == "node_failed"
    assert "broken on purpose" in nodes["model.watcher.broken"]["message"]
    assert nodes["model.watcher.broken_child"]["status"] == "upstream_failed"
    assert nodes["model.watcher.side"]["status"] == "success"
    assert nodes["model.watcher.side"]["resolved_by"] == "producer"


def test_killed_producer_is_resumed_in_one_build(redis_workers, redis_app, watcher_project, tmp_path):
    spec = watcher_spec(
        watcher_project, tmp_path / "w.duckdb", select=("slow_a+", "base"), vars={"slow_rows": 60_000_000},
        heartbeat_timeout=3.0, retry_delay=0.5, threads=1,
    )  # fmt: skip
    run = submit(spec, app=redis_app)
    store = store_for(redis_app)
    deadline = time.monotonic() + RUN_TIMEOUT
    while store.node_event(run.id, "model.watcher.base") is None:
        assert time.monotonic() < deadline, "the producer never reported the first model"
        time.sleep(0.02)
    redis_workers.processes["producer"].kill()  # SIGKILL mid-build
    killed_at = time.time()
    redis_workers.processes["producer"].wait()
    redis_workers.start("producer")
    status = run.wait(RUN_TIMEOUT)

    assert status.state == "success", status.to_dict()
    assert status.producer is not None and status.producer.generation == 2  # one resumed producer
    assert status.nodes["model.watcher.base"].resolved_by == "producer"
    rebuilt = [node for node in status.nodes.values() if node.unique_id != "model.watcher.base"]
    assert {node.resolved_by for node in rebuilt} == {"producer"}  # no per-node fallback
    for node in rebuilt:  # built after the kill, by the resumed producer
        assert _epoch(node.started_at) >= killed_at
    assert {"slow_a", "slow_b"} <= tables(tmp_path / "w.duckdb")


def test_a_second_delivery_of_the_producer_builds_nothing(redis_workers, redis_app, watcher_project, tmp_path):
    spec = watcher_spec(watcher_project, tmp_path / "w.duckdb", select=("+side",))
    run = submit(spec, app=redis_app)
    assert run.wait(RUN_TIMEOUT).state == "success"
    store = store_for(redis_app)
    before = store.node_event(run.id, "model.watcher.side")

    with pytest.raises(DuplicateProducer):
        run_producer(store, run.id, spec, lambda plan, ids: pytest.fail("a duplicate enqueued consumers"))
    # The same message delivered again through the broker: it must not rebuild either.
    redis_app.tasks["dbt_celery.produce"].apply_async(
        kwargs={"run_id": run.id, "spec": spec.to_dict()}, task_id=producer_task_id(run.id), queue="dbt_celery.producer"
    )
    probe = submit(watcher_spec(watcher_project, tmp_path / "w.duckdb", select=("base",)), app=redis_app)
    assert probe.wait(RUN_TIMEOUT).state == "success"  # the duplicate was consumed before this run
    assert store.node_event(run.id, "model.watcher.side") == before
    assert store.producer(run.id).phase.value == "finished"


def test_a_waiting_consumer_is_woken_by_its_record_and_runs_once(redis_workers, redis_app, watcher_project, tmp_path):
    # The idle wait is far longer than the build: a consumer that resolves at all was woken by
    # the producer when its record landed. Executions are counted from the workers' own events.
    spec = watcher_spec(
        watcher_project, tmp_path / "w.duckdb", select=("+slow_a+",), vars={"slow_rows": 20_000_000},
        idle_wait=3600.0, rearm_after=4 * 3600.0,
    )  # fmt: skip
    with CeleryEvents(redis_app) as events:
        run = submit(spec, app=redis_app)
        status = run.wait(RUN_TIMEOUT)
    assert status.state == "success"
    outcomes = store_for(redis_app).outcomes(run.id, status.nodes)
    for uid in status.nodes:
        task_id = consumer_task_id(run.id, uid)
        assert len(events.of(task_id, "task-started")) == 1, (uid, events.of(task_id))
        assert events.of(task_id, "task-retried") == []  # waiting is not retrying
        assert outcomes[uid].polls == 0 and outcomes[uid].retries == 0
    assert all(result.state == "SUCCESS" for result in run.results().results)
    # The root's consumer was sent before dbt reached it, to wait an hour: only the wake-up explains its end.
    (waiting, *_) = events.of(consumer_task_id(run.id, "model.watcher.base"), "task-received")
    assert waiting.get("eta"), waiting

    # A waiting copy whose countdown ends after its node resolved is dropped unrun, the task untouched.
    uid = "model.watcher.slow_a"
    task_id = consumer_task_id(run.id, uid)
    before = redis_app.AsyncResult(task_id)._get_task_meta()

    def unacked() -> list[tuple[str, str]]:
        """(task id, eta) of every message a worker holds unacknowledged."""
        with redis_app.connection() as connection:
            values = connection.default_channel.client.hvals("unacked")
        return [(headers["id"], headers["eta"]) for headers in (json.loads(value)[0]["headers"] for value in values)]

    with CeleryEvents(redis_app) as late:
        send_consumer(redis_app, run.id, GraphNode.placeholder(uid), countdown=1.0)
        (received,) = wait_for(lambda: late.of(task_id, "task-received"), 30, "the worker to receive the copy")
        assert received.get("eta")
        # Its countdown over, the copy is acknowledged (the run's own copies wait an hour and stay).
        wait_for(lambda: (task_id, received["eta"]) not in unacked(), 60, "the waiting copy to be acknowledged")
        assert [eta for held, eta in unacked() if held == task_id]  # the run's own copy, still on its countdown
        # A run through the same worker afterwards: any event of a copy that ran would have come by its end.
        probe = submit(watcher_spec(watcher_project, tmp_path / "w.duckdb", select=("base",)), app=redis_app)
        assert probe.wait(RUN_TIMEOUT).state == "success"
    assert late.of(task_id) == [received]  # never started: no task-started, -succeeded or -revoked
    assert redis_app.AsyncResult(task_id)._get_task_meta() == before


def test_restored_handle_sees_the_same_run(redis_workers, redis_app, watcher_project, tmp_path):
    run = submit(watcher_spec(watcher_project, tmp_path / "w.duckdb", select=("base",)), app=redis_app)
    run.wait(RUN_TIMEOUT)
    restored = DbtRun.restore(run.id, app=redis_app)
    assert restored.status().to_dict() == run.status().to_dict()
    summary = restored.producer_result.get(timeout=30)  # the producer task's own result
    assert summary["dbt_success"] is True and summary["reported"] == summary["nodes"] == 1


def _epoch(iso: str | None) -> float:
    seconds = epoch_seconds(iso)
    assert seconds is not None
    return seconds


def test_a_second_run_of_the_same_project_waits_for_the_first(redis_workers, redis_app, watcher_project, tmp_path):
    spec = watcher_spec(watcher_project, tmp_path / "w.duckdb", select=("+slow_a",), vars={"slow_rows": 10_000_000})
    first = submit(spec, app=redis_app)
    second = submit(spec, app=redis_app)  # e.g. a beat tick while the first still builds
    assert first.wait(RUN_TIMEOUT).state == "success"
    assert second.wait(RUN_TIMEOUT).state == "success"

    store = store_for(redis_app)
    first_done = max(
        o.recorded_at for o in store.outcomes(first.id, ["model.watcher.base", "model.watcher.slow_a"]).values()
    )
    assert store.producer(second.id).started_at >= first_done


def test_start_run_task_starts_a_run_from_json_as_beat_would(redis_workers, redis_app, watcher_project, tmp_path):
    spec = watcher_spec(watcher_project, tmp_path / "w.duckdb", select=("base",))
    result = redis_app.send_task("dbt_celery.start_run", kwargs={"spec": json.loads(spec.to_json())})
    started = result.get(timeout=60)  # routed to the control queue, where the consumer worker listens
    assert started["skipped"] is False
    run_id = started["run_id"]
    status = DbtRun.restore(run_id, app=redis_app).wait(RUN_TIMEOUT)
    assert status.state == "success"
    assert status.nodes["model.watcher.base"].status == "success"
