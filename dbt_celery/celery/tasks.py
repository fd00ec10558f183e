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
from typing import Any, Callable, Iterable

from celery import Celery, Task, shared_task
from celery.exceptions import Ignore
from celery.result import AsyncResult, GroupResult
from celery.signals import worker_init

from dbt_celery.celery.backends import store_for
from dbt_celery.celery.consumer import Consumer
from dbt_celery.celery.kombu_fix import keep_workers_alive_across_redis_restarts
from dbt_celery.celery.messages import WATCH_INTERVAL, enqueue, send_run
from dbt_celery.celery.watchdog import tend
from dbt_celery.core.overlap import take_turn, target_key
from dbt_celery.core.plan import (
    consumer_task_id,
    producer_task_id,
)
from dbt_celery.core.records import ProducerPhase
from dbt_celery.core.spec import RunSpec
from dbt_celery.core.store import WATCHDOG, StatusStore
from dbt_celery.core.summary import summarize
from dbt_celery.errors import (
    ConfigurationError,
    NodeError,
)

log = logging.getLogger(__name__)

#: Seconds between two checks of a producer waiting for an earlier run of its target.
TURN_POLL = 2.0


@shared_task(bind=True, name="dbt_celery.produce", acks_late=False, max_retries=None)
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
            raise self.retry(countdown=TURN_POLL)
    try:
        return run_producer(
            store,
            run_id,
            run_spec,
            lambda plan, ids: enqueue(self.app, plan.run_id, plan.nodes, ids),
            on_beat=_every(WATCH_INTERVAL, lambda: tend(self.app, run_id, by_watchdog=False)),
            keep_workspaces_for=store.kv_expires,
        )
    except DuplicateProducer as exc:
        log.info("%s", exc)
        raise Ignore() from None


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


@shared_task(bind=True, name="dbt_celery.start_run")
def start_run(self: Task, spec: dict[str, Any]) -> str:
    """Start a run from a JSON spec and return its run id (for beat and ``send_task``)."""
    return send_run(self.app, RunSpec.from_dict(spec))


@shared_task(
    bind=True,
    name="dbt_celery.consume",
    max_retries=None,  # polls and retries are counted in a header, not by Celery
    acks_late=True,
    reject_on_worker_lost=True,
    throws=(NodeError,),
)
def consume(self: Task, run_id: str, unique_id: str) -> dict[str, Any]:
    """Reflect one node's dbt result; wait, retry or build it inline as the policy says."""
    return Consumer(self, run_id, unique_id).run()


@shared_task(bind=True, name="dbt_celery.watch", max_retries=None, acks_late=True, ignore_result=True)
def watch(self: Task, run_id: str) -> str:
    """Keep a run moving: re-send lost consumers, resume a dead producer, end it at its deadline."""
    store = store_for(self.app)
    status = summarize(store, run_id)
    if status.done:
        return status.state
    if not store.claim(run_id, f"watch_round_{int(time.time() // WATCH_INTERVAL)}"):
        return "another watchdog has this round"  # copies sent while this one was stuck end here
    store.mark_seen(run_id, WATCHDOG, {})
    tend(self.app, run_id, by_watchdog=True)
    raise self.retry(countdown=WATCH_INTERVAL)


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
