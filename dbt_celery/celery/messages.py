"""Every message dbt-celery sends: runs, producers, consumers and watchdogs, under deterministic ids.

Sending goes through here so that task names, queues, shadow names (what Flower shows)
and the claims that make each send happen once live in one place.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

from celery import Celery, Task
from celery.exceptions import Ignore
from kombu.exceptions import OperationalError

from dbt_celery.celery.backends import store_for
from dbt_celery.celery.queues import Queues
from dbt_celery.core.plan import (
    GraphNode,
    consumer_task_id,
    producer_task_id,
    watchdog_task_id,
)
from dbt_celery.core.records import ProducerPhase, ProducerState, RunDocument
from dbt_celery.core.spec import RunSpec
from dbt_celery.core.store import PRODUCER_LEASE, WATCHDOG, StatusStore
from dbt_celery.errors import (
    ConfigurationError,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

#: Seconds between two rounds of a run's watchdog.
WATCH_INTERVAL = 15.0
#: Seconds without a watchdog round after which a consumer or the producer sends a new watchdog.
WATCHDOG_SILENCE = 3 * WATCH_INTERVAL


def send_run(app: Celery, spec: RunSpec, run_id: str | None = None) -> str:
    """Record a run, enqueue its producer and its watchdog, and return its id."""
    if app.conf.task_always_eager:
        raise ConfigurationError(
            "dbt-celery cannot run in eager mode (task_always_eager): consumers reschedule themselves; "
            "run a real worker (the embedded default needs nothing started)"
        )
    store = store_for(app)
    run_id = run_id or str(uuid.uuid4())
    now = time.time()
    store.put_run(run_id, RunDocument(spec.to_dict(), now, now + spec.timeout))
    store.put_producer(run_id, ProducerState(ProducerPhase.QUEUED, now))
    send_producer(app, run_id, spec, generation=1)
    store.mark_seen(run_id, WATCHDOG, {})
    send_watchdog(app, run_id, spec)
    return run_id


def send_producer(app: Celery, run_id: str, spec: RunSpec, generation: int) -> None:
    """Enqueue a run's producer (a later generation resumes a dead one)."""
    label = "build" if generation <= 1 else f"build (resumed, generation {generation})"
    _publish(
        app,
        "dbt_celery.produce",
        kwargs={"run_id": run_id, "spec": spec.to_dict()},
        task_id=producer_task_id(run_id, generation),
        queue=Queues.of(app).producer,
        shadow=f"dbt {label} {Path(spec.project_dir).name}",
    )


def _publish(app: Celery, name: str, **options: Any) -> None:
    """Send one of dbt-celery's tasks; a broker that cannot be reached is a StoreUnavailable."""
    try:
        app.tasks[name].apply_async(**options)
    except OperationalError as exc:
        raise StoreUnavailable(f"the broker is unreachable: {exc}") from None


def resend(task: Task, countdown: float, *, queue: str | None = None, headers: dict[str, Any] | None = None) -> Ignore:
    """Send the running task again under its own id, in ``countdown`` seconds; return the Ignore to raise.

    How dbt-celery waits (a consumer's poll, a watchdog's next round, a producer waiting for its
    target's turn): not ``self.retry``, since nothing failed, so Flower shows no RETRY, exception
    or retry count for it. The copy keeps the task's name, arguments, shadow name, queue (unless
    ``queue`` says another) and genuine retry count; ending the delivery with ``Ignore`` leaves
    the task's stored state as it was.
    """
    request = task.request
    _publish(
        task.app,
        task.name,
        args=request.args,
        kwargs=request.kwargs,
        task_id=request.id,
        countdown=countdown or None,
        queue=queue or (request.delivery_info or {}).get("routing_key"),
        shadow=request.shadow,
        headers=headers,
        retries=request.retries or 0,
    )
    return Ignore()


def enqueue(app: Celery, run_id: str, nodes: Any, ids: Iterable[str] | None = None, *, idle_wait: float) -> int:
    """Send the consumer of each node (all of ``nodes``, or those in ``ids``) that nobody sent yet; return how many.

    A node dbt has already reported is looked at at once; the others are looked at after
    ``idle_wait`` seconds, unless the producer wakes them sooner (:func:`wake_consumers`).
    The claim is taken before the record is read, and the producer writes the record
    before it reads the claims, so one of the two always sees the other.
    """
    store = store_for(app)
    wanted = list(ids if ids is not None else nodes)
    claimed = [what.removeprefix("enqueue_") for what in store.claim_many(run_id, [f"enqueue_{uid}" for uid in wanted])]
    reported = store.node_events(run_id, claimed) if claimed else {}
    for uid in claimed:
        send_consumer(app, run_id, nodes[uid], countdown=0.0 if uid in reported else idle_wait)
    return len(claimed)


def wake_consumers(app: Celery, run_id: str, nodes: Mapping[str, GraphNode]) -> int:
    """Look at once at the nodes just recorded whose consumers were sent (they may be waiting); return how many.

    A woken consumer carries the attempt its waiting copy last noted; the waiting copy,
    arriving later, finds the outcome recorded and is dropped without touching its task.
    """
    store = store_for(app)
    sent = store.claims(run_id, [f"enqueue_{uid}" for uid in nodes])
    woken = [uid for uid in nodes if f"enqueue_{uid}" in sent]
    seen = store.seen(run_id, woken) if woken else {}
    for uid in woken:
        send_consumer(app, run_id, nodes[uid], seen.get(uid, {}).get("headers") or None)
    return len(woken)


def send_consumer(
    app: Celery,
    run_id: str,
    node: GraphNode,
    headers: dict[str, Any] | None = None,
    *,
    countdown: float = 0.0,
    queue: str | None = None,
) -> None:
    """Send (or send again) the consumer of one node, under its deterministic task id."""
    _publish(
        app,
        "dbt_celery.consume",
        kwargs={"run_id": run_id, "unique_id": node.unique_id},
        task_id=consumer_task_id(run_id, node.unique_id),
        queue=queue or Queues.of(app).consumer,
        shadow=f"dbt {node.resource_type} {node.name}",
        headers=headers,
        countdown=countdown or None,
    )


def resume_producer(app: Celery, store: StatusStore, run_id: str, spec: RunSpec) -> None:
    """Send a resumed producer for a dead one (once per lease generation and time window)."""
    liveness = store.liveness(run_id, PRODUCER_LEASE)
    generation = liveness.lease.generation if liveness.lease else 0
    if liveness.alive(time.time()) or (liveness.lease is not None and liveness.lease.done):
        return
    window = int(time.time() // max(spec.heartbeat_timeout * 3, 10))
    if store.claim(run_id, f"resume_{generation}_{window}"):
        log.warning("run %s: producer generation %d died; sending generation %d", run_id, generation, generation + 1)
        send_producer(app, run_id, spec, generation + 1)


def send_watchdog(app: Celery, run_id: str, spec: RunSpec) -> None:
    """Enqueue a run's watchdog (one round in ``WATCH_INTERVAL`` seconds).

    It goes to the producer queue, so that a killed consumer worker (which holds the
    consumers' countdown messages) does not take the watchdog down with them; the
    consumers in turn send a new watchdog when the producer worker took it down.
    """
    _publish(
        app,
        "dbt_celery.watch",
        kwargs={"run_id": run_id}, countdown=WATCH_INTERVAL, queue=Queues.of(app).producer,
        shadow=f"dbt watch {Path(spec.project_dir).name}", task_id=watchdog_task_id(run_id),
    )  # fmt: skip


def revive_watchdog(app: Celery, store: StatusStore, run_id: str, spec: RunSpec, seen_at: float | None) -> None:
    """Send a new watchdog when the run's one fell silent (once per silence, whoever notices)."""
    now = time.time()
    if seen_at is None or now - seen_at <= WATCHDOG_SILENCE:
        return
    if store.claim(run_id, f"watchdog_after_{int(seen_at)}"):
        log.warning("run %s: its watchdog went silent %.0f s ago; sending a new one", run_id, now - seen_at)
        store.mark_seen(run_id, WATCHDOG, {})
        send_watchdog(app, run_id, spec)
