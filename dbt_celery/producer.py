"""The producer: plan a run, then run its single ``dbt build`` and record every node.

Free of Celery: the task in :mod:`dbt_celery.tasks` hands in the store and a function
that enqueues consumers. Exactly one build per run: the producer first takes the run's
``producer`` claim, so a redelivered or duplicated message builds nothing. While it
works, a heartbeat thread refreshes its state; consumers that see the heartbeat go
stale know the producer died. When dbt ends, every planned node that dbt never
reported is recorded explicitly, so no consumer waits for it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any, Callable, Iterable

from dbt_celery.commands import Workspace, build_command
from dbt_celery.errors import DbtCeleryError
from dbt_celery.events import not_run_event
from dbt_celery.invocation import DbtInvocation, events_for_unreported
from dbt_celery.plan import RunPlan
from dbt_celery.project import ProjectGraph
from dbt_celery.spec import RunSpec
from dbt_celery.store import ProducerState, StatusStore

log = logging.getLogger(__name__)

Enqueue = Callable[[RunPlan, Iterable[str]], None]


class DuplicateProducer(DbtCeleryError):
    """Another delivery of this run's producer already took the run."""


class Heartbeat:
    """A daemon thread that refreshes the producer's state until stopped."""

    def __init__(self, store: StatusStore, run_id: str, state: ProducerState, interval: float) -> None:
        self._store, self._run_id, self._state, self._interval = store, run_id, state, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="dbt-celery-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            now = time.time()
            state = ProducerState(**{**self._state.to_dict(), "heartbeat_at": now, "updated_at": now})
            try:
                self._store.put_producer_state(self._run_id, state)
            except Exception:  # noqa: BLE001 - a missed beat is retried at the next one
                log.warning("producer heartbeat of run %s could not be written", self._run_id, exc_info=True)


def run_producer(store: StatusStore, run_id: str, spec: RunSpec, enqueue: Enqueue) -> dict[str, Any]:
    """Plan and build one run; return a summary of the build."""
    if not store.claim(run_id, "producer"):
        raise DuplicateProducer(f"run {run_id} already has a producer; this delivery builds nothing")
    now = time.time()
    running = ProducerState(
        ProducerState.RUNNING, updated_at=now, heartbeat_at=now, started_at=now, worker=_worker_name()
    )
    store.put_producer_state(run_id, running)
    plan: RunPlan | None = None
    reported: set[str] = set()
    interval = max(0.2, spec.heartbeat_timeout / 4)
    try:
        with Heartbeat(store, run_id, running, interval):
            workspace = Workspace.create(spec, run_id, "producer")
            graph = ProjectGraph.load(spec, workspace)
            plan = RunPlan.from_graph(run_id, graph)
            plan.save(store)
            enqueue(plan, plan.roots())
            invocation = DbtInvocation(
                build_command(spec, workspace),
                mode=spec.invocation,
                cwd=spec.project_dir,
                manifest=graph.manifest if spec.invocation == "in_process" else None,
            )
            for event in invocation:
                if event.unique_id in plan.nodes:
                    store.put_node_event(run_id, event)
                    reported.add(event.unique_id)
            reason = invocation.error or "dbt finished without running this node"
            for event in events_for_unreported(plan.nodes, reported, workspace.run_results, reason):
                store.put_node_event(run_id, event)
                reported.add(event.unique_id)
    except BaseException as exc:
        if plan is not None:
            for unique_id in set(plan.nodes) - reported:
                store.put_node_event(run_id, not_run_event(unique_id, f"producer failed: {exc}"))
        _finish(store, run_id, running, ProducerState.FAILED, error=f"{type(exc).__name__}: {exc}")
        raise
    failed = invocation.error is not None
    _finish(
        store,
        run_id,
        running,
        ProducerState.FAILED if failed else ProducerState.FINISHED,
        dbt_success=invocation.success,
        error=invocation.error,
    )
    return {
        "run_id": run_id,
        "nodes": len(plan.nodes),
        "reported": len(reported),
        "dbt_success": invocation.success,
        "error": invocation.error,
    }


def _finish(store: StatusStore, run_id: str, running: ProducerState, state: str, **fields: Any) -> None:
    now = time.time()
    final = ProducerState(
        **{**running.to_dict(), "state": state, "updated_at": now, "heartbeat_at": now, "finished_at": now, **fields}
    )
    store.put_producer_state(run_id, final)


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
