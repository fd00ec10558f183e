"""Recovery: what a producer killed mid-build costs a run (``python -m benchmarks --recovery``).

On one generated project, two dbt-celery runs with ``RunSpec(heartbeat_timeout=10)``
(a dead producer's lease runs out 10 s after its last renewal):

* undisturbed: submit → ``wait()`` returns, as the main measurement times it (the
  store is watched the same way as below, only to note when half the nodes had a record);
* killed: once half of the planned nodes have a dbt record in the store, the producer
  worker's process group (the worker and its in-process dbt) is SIGKILLed and a new
  producer worker is started at once. A consumer (or the waiting handle) notices the
  expired lease and sends a resumed producer (generation 2), which builds every node
  still unreported in one ``dbt build --select ...``.

Reported: both wall times and their ratio (target ≤ 1.5), the producer generation that
finished (2 expected), how many nodes fell back to inline builds (0 expected), and,
from the resumed producer's own ``run_results.json``, how many nodes it built, that each
appears once, and that none of them had a record when the producer was killed.
"""

from __future__ import annotations

import collections
import json
import math
import time
from pathlib import Path
from typing import Any

from celery import Celery

from benchmarks.generate import Project
from benchmarks.measure import (
    RUN_TIMEOUT,
    WAIT_INTERVAL,
    _results_span,
    check_own_producer,
    fresh_db,
    producer_results,
)
from benchmarks.workers import Workers
from dbt_celery.celery.backends import store_for
from dbt_celery.core.plan import plan_summary
from dbt_celery.core.records import NodeState, ProducerPhase
from dbt_celery.core.spec import RunSpec
from dbt_celery.run import DbtRun, RunStatus, submit

#: The lease of whoever builds, in seconds: how soon a dead producer counts as dead.
HEARTBEAT_TIMEOUT = 10.0
#: Share of the planned nodes that must have a record before the producer is killed.
KILL_FRACTION = 0.5
#: The target of the issue: killed run / undisturbed run.
TARGET_RATIO = 1.5
#: Seconds between two reads of the store while waiting for the moment to kill.
KILL_POLL = 0.05


def measure_recovery(
    app: Celery, workers: Workers, project: Project, dbs: Path, threads: int, workspaces: Path
) -> dict[str, Any]:
    """An undisturbed run, then one whose producer worker is SIGKILLed at KILL_FRACTION, on fresh databases."""
    spec = RunSpec(
        project_dir=str(project.path),
        profiles_dir=str(project.path),
        threads=threads,
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
    )
    project.write_profile(fresh_db(dbs / "recovery-undisturbed.duckdb"), threads)
    undisturbed = _timed_run(app, workers, spec, kill=False)
    project.write_profile(fresh_db(dbs / "recovery-killed.duckdb"), threads)
    killed = _timed_run(app, workers, spec, kill=True)
    fresh_db(dbs / "recovery-undisturbed.duckdb")
    fresh_db(dbs / "recovery-killed.duckdb")

    status: RunStatus = killed.pop("status")
    undisturbed.pop("status")
    producer = status.producer
    assert producer is not None
    check_own_producer(producer, workers)  # generation 2 ran in the restarted worker
    recorded_at_kill = set(killed.pop("recorded_at_kill"))
    planned = set(status.nodes)
    resumed = resumed_build(producer_results(workspaces, status.run_id, producer.generation), recorded_at_kill, planned)
    resolved_by = collections.Counter(node.resolved_by or "none" for node in status.nodes.values())
    kill_epoch = killed.pop("killed_at_epoch")
    return {
        "models": project.model_count,
        "nodes": len(planned),
        "heartbeat_timeout": HEARTBEAT_TIMEOUT,
        "kill_fraction": KILL_FRACTION,
        "undisturbed": undisturbed,
        "killed": {**killed, "records_at_kill": len(recorded_at_kill)},
        "ratio": killed["wall"] / undisturbed["wall"],
        "target_ratio": TARGET_RATIO,
        "generation": producer.generation,
        "producer_phase": producer.phase.value,
        "resume_delay": (producer.started_at - kill_epoch) if producer.started_at else None,
        "timeline": _timeline(killed, undisturbed, producer, kill_epoch, resumed),
        "fallbacks": resolved_by.get("fallback", 0),
        "resolved_by": dict(resolved_by),
        "resumed_build": resumed,
    }


def _timed_run(app: Celery, workers: Workers, spec: RunSpec, *, kill: bool) -> dict[str, Any]:
    """Submit, optionally kill and restart the producer worker mid-build, and wait; raise unless it succeeded."""
    submitted = time.time()
    started = time.perf_counter()
    run = submit(spec, app=app)
    planned, wanted = _wait_for_records(run, workers)
    half: dict[str, Any] = {"half_at": time.perf_counter() - started, "planned": len(planned), "threshold": wanted}
    if kill:
        half |= _kill_producer(run, workers, planned, started)
    status = run.wait(RUN_TIMEOUT, interval=WAIT_INTERVAL)
    wall = time.perf_counter() - started
    if status.state != "success":
        failed = [(uid, node.status.value, node.message) for uid, node in status.nodes.items()
                  if node.status is not NodeState.SUCCESS]  # fmt: skip
        raise RuntimeError(f"recovery run {run.id} ended {status.state}: {status.error} {failed[:5]}")
    producer = status.producer
    if producer is None or producer.phase is not ProducerPhase.FINISHED:
        raise RuntimeError(f"recovery run {run.id}: producer ended {producer and producer.phase.value}")
    assert producer.finished_at is not None
    return {
        "run_id": run.id,
        "wall": wall,
        "producer_finished_at": producer.finished_at - submitted,
        "status": status,
        **half,
    }


def _wait_for_records(run: DbtRun, workers: Workers) -> tuple[list[str], int]:
    """Wait until KILL_FRACTION of the planned nodes have a record; return the planned ids and that count."""
    store = store_for(run.app)
    deadline = time.monotonic() + RUN_TIMEOUT
    planned: list[str] = []
    wanted = 0
    while True:
        workers.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"recovery run {run.id}: {wanted} records not reached within {RUN_TIMEOUT} s")
        if not planned:
            planned = list(plan_summary(store, run.id) or {})
            wanted = math.ceil(len(planned) * KILL_FRACTION)
        if planned and len(store.node_events(run.id, planned)) >= wanted:
            return planned, wanted
        time.sleep(KILL_POLL)


def _kill_producer(run: DbtRun, workers: Workers, planned: list[str], started: float) -> dict[str, Any]:
    """SIGKILL the producer worker's group, note the records it left, and start a new producer worker."""
    store = store_for(run.app)
    old_pid = workers.pid("producer")
    workers.kill("producer")  # the worker and its in-process dbt, mid-build
    killed_at = time.perf_counter() - started
    killed_epoch = time.time()
    # Nothing writes for the dead producer any more: these are the records it left behind.
    recorded = sorted(store.node_events(run.id, planned))
    workers.start("producer")
    return {
        "killed_at": killed_at,
        "killed_at_epoch": killed_epoch,
        "recorded_at_kill": recorded,
        "killed_pid": old_pid,
        "restarted_pid": workers.pid("producer"),
    }


def _timeline(
    killed: dict[str, Any],
    undisturbed: dict[str, Any],
    producer: Any,
    kill_epoch: float,
    resumed: dict[str, Any],
) -> dict[str, Any]:
    """Where the killed run's extra time went, in seconds (each step from the one before)."""
    span = resumed.get("span") or {}
    first = span.get("first_start")
    return {
        "undisturbed_half_at": undisturbed["half_at"],
        "killed_half_at": killed["half_at"],
        # What the undisturbed run still needed once half its nodes had a record.
        "undisturbed_after_half": undisturbed["wall"] - undisturbed["half_at"],
        "killed_after_kill": killed["wall"] - killed["killed_at"],
        # The recovery's own cost: the killed run's time after the kill beyond the undisturbed run's after the mark.
        "extra_after_half": (killed["wall"] - killed["killed_at"]) - (undisturbed["wall"] - undisturbed["half_at"]),
        "kill_to_resumed_start": producer.started_at - kill_epoch if producer.started_at else None,
        "resumed_start_to_first_node": first - producer.started_at if first and producer.started_at else None,
        "resumed_nodes_span": span.get("span"),
        "resumed_producer_total": (
            producer.finished_at - producer.started_at if producer.finished_at and producer.started_at else None
        ),
        "producer_finished_to_wait_return": killed["wall"] - killed["producer_finished_at"],
    }


def resumed_build(path: Path, recorded_at_kill: set[str], planned: set[str]) -> dict[str, Any]:
    """What the resumed producer's ``dbt build`` ran, checked against the records left at the kill."""
    if not path.is_file():
        return {"path": str(path), "found": False}
    results = json.loads(path.read_text())["results"]
    ids = [result["unique_id"] for result in results]
    counts = collections.Counter(ids)
    built = set(ids)
    return {
        "path": str(path),
        "found": True,
        "results": len(ids),
        "nodes": len(built),
        "statuses": dict(collections.Counter(result["status"] for result in results)),
        "duplicates": sorted(uid for uid, count in counts.items() if count > 1),
        "recorded_before_kill": sorted(built & recorded_at_kill),
        "unplanned": sorted(built - planned),
        # Nodes without a record at the kill that the resumed build did not run either.
        "not_rebuilt": sorted(planned - recorded_at_kill - built),
        "span": _results_span(path),
    }


def recovery_ok(data: dict[str, Any]) -> bool:
    """Whether the killed run recovered as intended (the ratio aside)."""
    resumed = data["resumed_build"]
    return (
        data["generation"] == 2
        and data["fallbacks"] == 0
        and resumed.get("found", False)
        and not resumed["duplicates"]
        and not resumed["recorded_before_kill"]
        and not resumed["not_rebuilt"]
    )


def timeline_text(data: dict[str, Any]) -> str:
    """Where the killed run's time went after the kill, against what the undisturbed run still needed."""
    t = data["timeline"]

    def s(value: float | None) -> str:
        return "?" if value is None else f"{value:.1f} s"

    return (
        f"half the nodes had a record {s(t.get('undisturbed_half_at'))} after submit in the undisturbed run and "
        f"{s(t.get('killed_half_at'))} in the killed one; from there the undisturbed run took "
        f"{s(t['undisturbed_after_half'])} more, the killed run {s(t['killed_after_kill'])} after the kill "
        f"({s(t.get('extra_after_half'))} extra): {s(t['kill_to_resumed_start'])} until generation "
        f"2 started (lease expiry + noticing), {s(t['resumed_start_to_first_node'])} to its first node (parse), "
        f"{s(t['resumed_nodes_span'])} of nodes, {s(t['producer_finished_to_wait_return'])} from the producer "
        "finishing to wait() returning"
    )


def recovery_lines(data: dict[str, Any]) -> list[str]:
    """What the harness prints once the recovery scenario is done."""
    killed, resumed = data["killed"], data["resumed_build"]
    lines = [
        f"  recovery      {data['models']} models: undisturbed {data['undisturbed']['wall']:.2f} s, producer killed at "
        f"{killed['killed_at']:.1f} s ({killed['records_at_kill']}/{killed['planned']} nodes recorded) "
        f"{killed['wall']:.2f} s, ratio {data['ratio']:.2f} (target ≤ {data['target_ratio']})",
        f"                generation {data['generation']} finished, resumed {data['resume_delay'] or float('nan'):.1f} s "
        f"after the kill, {data['fallbacks']} fallback(s)",
        "                " + timeline_text(data),
    ]
    if resumed.get("found"):
        lines.append(
            f"                resumed build ran {resumed['nodes']} node(s), {len(resumed['duplicates'])} duplicate(s), "
            f"{len(resumed['recorded_before_kill'])} already recorded before the kill, "
            f"{len(resumed['not_rebuilt'])} unrecorded node(s) not rebuilt"
        )
    else:
        lines.append(f"                no run_results.json from the resumed producer at {resumed['path']}")
    return lines
