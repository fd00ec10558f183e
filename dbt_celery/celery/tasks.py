"""dbt-celery's Celery tasks: their names, options and what each one does.

* ``dbt_celery.produce`` runs a run's single ``dbt build`` (:mod:`dbt_celery.dbt.producer`).
* ``dbt_celery.consume`` reflects one node (:mod:`dbt_celery.celery.consumer`).
* ``dbt_celery.watch`` is a run's watchdog (:mod:`dbt_celery.celery.watchdog`).
* ``dbt_celery.start_run`` starts a run from a JSON spec (celery beat, ``send_task``).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import Counter
from typing import Any, Callable, Iterable

from celery import Celery, Task, shared_task
from celery.exceptions import Ignore
from celery.result import AsyncResult, GroupResult
from celery.signals import worker_init

from dbt_celery.celery.backends import store_for
from dbt_celery.celery.consumer import Consumer
from dbt_celery.celery.kombu_fix import keep_workers_alive_across_redis_restarts
from dbt_celery.celery.messages import WATCH_INTERVAL, enqueue, resend, send_run, wake_consumers
from dbt_celery.celery.signals import announce, run_finished, run_started
from dbt_celery.celery.watchdog import tend, tend_while_building
from dbt_celery.core.overlap import Admission, admit, check_policy, location_key, take_turn, target_key
from dbt_celery.core.plan import (
    consumer_task_id,
    producer_task_id,
)
from dbt_celery.core.records import ProducerPhase, ProducerState
from dbt_celery.core.spec import RunSpec
from dbt_celery.core.store import WATCHDOG, StatusStore
from dbt_celery.core.summary import summarize
from dbt_celery.errors import (
    BuildFailed,
    ConfigurationError,
    NodeError,
    ProfileError,
)

log = logging.getLogger(__name__)

#: Seconds between two checks of a producer waiting for an earlier run of its target.
TURN_POLL = 2.0
#: The custom state a building producer shows in Flower and in its AsyncResult (with done/total).
PROGRESS = "PROGRESS"
#: Seconds between two progress reports of the producer.
PROGRESS_EVERY = 1.0


@shared_task(
    bind=True,
    name="dbt_celery.produce",
    acks_late=False,
    throws=(BuildFailed,),
    ignore_result=False,  # stored even under the app's task_ignore_result=True (Flask's guide sets it)
)
def produce(self: Task, run_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Plan a run and run its single dbt build, recording each node as dbt finishes it."""
    from dbt_celery.dbt.producer import DuplicateProducer, run_producer
    from dbt_celery.dbt.target import target_identity

    store = store_for(self.app)
    run_spec = RunSpec.from_dict(spec)
    run = store.run(run_id)
    if run is None:
        raise ConfigurationError(f"run {run_id} is unknown to this store (expired, or another store)")
    if run_spec.exclusive:
        key = target_key(target_identity(run_spec))
        blocker = take_turn(store, run_id, key, lambda other: summarize(store, other).done)
        if blocker is not None and time.time() < run.deadline and store.cancelled(run_id) is None:
            _note_waiting(store, run_id, blocker)
            raise resend(self, TURN_POLL)
    try:
        summary = run_producer(
            store,
            run_id,
            run_spec,
            lambda plan, ids: enqueue(self.app, plan.run_id, plan.nodes, ids, idle_wait=run_spec.idle_countdown),
            on_beat=_every(WATCH_INTERVAL, lambda: tend_while_building(self.app, run_id)),
            keep_workspaces_for=store.kv_expires,
            wake=lambda plan, ids: wake_consumers(self.app, run_id, {uid: plan.nodes[uid] for uid in ids}),
            on_progress=_ProgressReport(self, run_id),
        )
    except DuplicateProducer as exc:
        log.info("%s", exc)
        raise Ignore() from None
    if not summary["lease_lost"] and (summary["phase"] != "finished" or summary["dbt_success"] is False):
        # FAILURE, so task_failure and Flower tell the truth; the summary rides along.
        raise BuildFailed(_failure_line(summary), summary)
    return summary


def _failure_line(summary: dict[str, Any]) -> str:
    if summary.get("stopped"):
        return f"dbt build stopped: {summary['stopped']}"
    if summary.get("error"):
        return f"dbt build failed: {summary['error']}"
    return f"dbt build finished with failed nodes ({summary['reported']} of {summary['nodes']} reported)"


class _ProgressReport:
    """The producer's progress as Celery shows it: a PROGRESS state with done/total, sent as an event too."""

    def __init__(self, task: Task, run_id: str) -> None:
        self.task, self.run_id, self.task_id = task, run_id, task.request.id
        self.hostname, self.shadow = task.request.hostname, task.request.shadow
        self.last = 0.0
        self.started = False

    def __call__(self, state: ProducerState) -> None:
        if not self.started:
            self.started = True
            announce(self.task.app, run_started, self.task, self.hostname, run_id=self.run_id, total=state.total)
        if time.monotonic() - self.last < PROGRESS_EVERY and state.done < (state.total or 0):
            return
        self.last = time.monotonic()
        meta = {"run_id": self.run_id, "done": state.done, "total": state.total}
        try:
            self.task.update_state(task_id=self.task_id, state=PROGRESS, meta=meta)
            # Flower shows only Celery's own fields: the name (a solo worker sends task-received
            # only after the task) and a result line carry what it should show while dbt builds.
            self.task.send_event("task-progress", name=self.shadow, result=f"{state.done}/{state.total} nodes", **meta)
        except Exception as exc:  # noqa: BLE001 - monitoring must never stop a build
            log.warning("run %s: could not report progress: %r", self.run_id, exc)


def _every(seconds: float, action: Callable[[], None]) -> Callable[[], None]:
    """``action``, done at most once every ``seconds`` however often it is called."""
    last = [0.0]

    def throttled() -> None:
        if time.monotonic() - last[0] >= seconds:
            last[0] = time.monotonic()
            action()

    return throttled


def _note_waiting(store: StatusStore, run_id: str, blocker: str) -> None:
    producer = store.producer(run_id)
    if producer is not None and producer.phase is ProducerPhase.QUEUED:
        store.put_producer(run_id, producer.replace(phase=ProducerPhase.WAITING, updated_at=time.time()))
    log.info("run %s waits for run %s of the same target", run_id, blocker)


@shared_task(bind=True, name="dbt_celery.start_run", ignore_result=False)
def start_run(self: Task, spec: dict[str, Any], overlap: str = "skip") -> dict[str, Any]:
    """Start a run from a JSON spec, as ``overlap`` says while its target is busy (beat, ``send_task``).

    ``overlap`` is ``skip`` (no run while a run of the same target is going: an overrunning
    schedule does not pile up), ``queue`` (the run waits its turn) or ``cancel_previous``.
    Returns ``{"run_id", "skipped", "reason", "cancelled"}``; a skipped start has no run id.
    """
    from dbt_celery.dbt.target import target_identity

    check_policy(overlap)
    run_spec = RunSpec.from_dict(spec)
    run_id = str(uuid.uuid4())
    admission = Admission(run_id)
    if run_spec.exclusive:
        try:
            key = target_key(target_identity(run_spec))
        except ProfileError as exc:  # this worker cannot read the project: key on the spec itself
            log.warning("start of %s checks overlaps by its spec only: %s", run_spec.project_dir, exc)
            key = location_key(run_spec)
        store = store_for(self.app)
        admission = admit(store, key, run_id, overlap, lambda other: summarize(store, other).done)
    if admission.skipped:
        log.info("start of %s skipped: %s", run_spec.project_dir, admission.reason)
        return admission.to_dict()
    send_run(self.app, run_spec, run_id)
    log.info("run %s started%s", run_id, f" ({admission.reason})" if admission.reason else "")
    return admission.to_dict()


@shared_task(
    bind=True,
    name="dbt_celery.consume",
    max_retries=None,  # polls and retries are counted in a header, not by Celery
    acks_late=True,
    reject_on_worker_lost=True,
    throws=(NodeError,),
    ignore_result=False,  # a run's handle reads every node's result, whatever task_ignore_result says
    Request="dbt_celery.celery.consumer:ConsumerRequest",  # drops a woken consumer's waiting copy unrun
)
def consume(self: Task, run_id: str, unique_id: str) -> dict[str, Any]:
    """Reflect one node's dbt result; wait, retry or build it inline as the policy says."""
    return Consumer(self, run_id, unique_id).run()


@shared_task(bind=True, name="dbt_celery.watch", acks_late=True, ignore_result=True)
def watch(self: Task, run_id: str) -> str:
    """Keep a run moving: re-send lost consumers, resume a dead producer, end it at its deadline."""
    store = store_for(self.app)
    status = summarize(store, run_id)
    if status.done:
        if store.claim(run_id, "announced_finished"):
            counts = dict(Counter(node.status.value for node in status.nodes.values()))
            announce(
                self.app, run_finished, self, self.request.hostname, run_id=run_id, state=status.state, counts=counts
            )
        return status.state
    if not store.claim(run_id, f"watch_round_{int(time.time() // WATCH_INTERVAL)}"):
        return "another watchdog has this round"  # copies sent while this one was stuck end here
    store.mark_seen(run_id, WATCHDOG, {})
    tend(self.app, run_id, by_watchdog=True)
    raise resend(self, WATCH_INTERVAL)


# -- results for run handles ------------------------------------------------------------------
def producer_result(app: Celery, run_id: str) -> AsyncResult:
    """The Celery result of a run's (first) producer task."""
    return AsyncResult(producer_task_id(run_id), app=app)


def consumer_results(app: Celery, run_id: str, unique_ids: Iterable[str]) -> GroupResult:
    """The consumers' Celery results as one group."""
    return GroupResult(run_id, [AsyncResult(consumer_task_id(run_id, uid), app=app) for uid in unique_ids], app=app)


@worker_init.connect
def _prepare_worker(**_: Any) -> None:
    """Make a worker ride out Redis restarts; import dbt while a producer worker boots."""
    keep_workers_alive_across_redis_restarts()
    if os.environ.get("DBT_CELERY_PRELOAD_DBT"):
        from dbt_celery.dbt import invocation

        invocation.preload()
