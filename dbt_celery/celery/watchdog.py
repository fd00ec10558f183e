"""Keeping a run moving when messages or processes are lost: one round of the watchdog.

:func:`tend` re-sends consumers that went silent or were never sent, resumes a dead
producer, and ends the open nodes of a run past its deadline. The ``dbt_celery.watch``
task runs it every :data:`~dbt_celery.celery.messages.WATCH_INTERVAL` seconds; the
producer runs it on its beat (:func:`tend_while_building`), and a waiting
:meth:`~dbt_celery.run.DbtRun.wait` too.
"""

from __future__ import annotations

import logging
import time

from celery import Celery

from dbt_celery.celery.backends import store_for
from dbt_celery.celery.messages import (
    enqueue,
    resume_producer,
    revive_watchdog,
    send_consumer,
)
from dbt_celery.core.plan import (
    GraphNode,
    consumer_task_id,
    plan_summary,
    read_nodes,
)
from dbt_celery.core.records import PASSING_STATES, NodeOutcome, NodeState, ProducerPhase
from dbt_celery.core.spec import RunSpec
from dbt_celery.core.store import PRODUCER_LEASE, WATCHDOG, StatusStore

log = logging.getLogger(__name__)


def tend(app: Celery, run_id: str, *, by_watchdog: bool) -> None:
    """One round of keeping a run moving (the watchdog's, the producer's on each beat, a waiting handle's)."""
    store = store_for(app)
    run = store.run(run_id)
    if run is None:
        return
    spec, now = RunSpec.from_dict(run.spec), time.time()
    if not by_watchdog:
        last = store.seen(run_id, [WATCHDOG]).get(WATCHDOG, {}).get("at")
        revive_watchdog(app, store, run_id, spec, float(last) if last is not None else None)
    producer = store.producer(run_id)
    if (
        producer is not None
        and not producer.ended
        and producer.phase in (ProducerPhase.PLANNING, ProducerPhase.RUNNING)
    ):
        if not store.liveness(run_id, PRODUCER_LEASE).alive(now):
            resume_producer(app, store, run_id, spec)
    planned = plan_summary(store, run_id)
    if planned is None:
        return
    if now > run.deadline and not store.liveness(run_id, PRODUCER_LEASE).alive(now):
        _expire(app, store, run_id, list(planned))
    else:
        _rearm(app, store, run_id, list(planned), spec, now)


def tend_while_building(app: Celery, run_id: str) -> None:
    """A building producer's round, on its beat: it keeps the run moving, and counts as the watchdog meanwhile.

    The watchdog task waits on the producer queue, behind the build on a ``-P solo`` producer
    worker; the watchdog's mark, set here, keeps consumers and run handles from taking it
    for dead and sending more watchdogs that would only queue up behind the build too.
    When the producer dies its beat stops, and the silence is noticed as before.
    """
    store_for(app).mark_seen(run_id, WATCHDOG, {})
    tend(app, run_id, by_watchdog=True)


def _rearm(app: Celery, store: StatusStore, run_id: str, uids: list[str], spec: RunSpec, now: float) -> None:
    """Send again every consumer that went silent, and send those nobody sent though they may go.

    A consumer is silent when it was sent, has no outcome, and showed no sign of life for
    ``after`` seconds (its message died with a worker, or its publish failed). A node is
    stranded when its parents all passed but its consumer was never sent (a parent's
    consumer broke between recording its outcome and releasing its children).
    """
    after = spec.rearm_after
    # Outcomes first: a parent's consumer records its outcome before it claims its children.
    outcomes = store.outcomes(run_id, uids)
    claims = store.claims(run_id, [f"enqueue_{uid}" for uid in uids])
    sent = [uid for uid in uids if f"enqueue_{uid}" in claims and uid not in outcomes]
    seen = store.seen(run_id, sent)
    stale = [uid for uid in sent if now - float(seen.get(uid, {}).get("at") or claims[f"enqueue_{uid}"]) > after]
    nodes, broken = read_nodes(store, run_id, stale)
    for uid in stale:
        log.warning("run %s: consumer of %s silent for %.0f s; sending it again", run_id, uid, after)
        headers = seen.get(uid, {}).get("headers") or {}
        send_consumer(app, run_id, nodes.get(uid) or GraphNode.placeholder(uid), {**headers, "dbt_celery_seen_at": 0})
        store.mark_seen(run_id, uid, headers)
    unsent, _ = read_nodes(store, run_id, [uid for uid in uids if f"enqueue_{uid}" not in claims])
    stranded = {
        uid: node
        for uid, node in unsent.items()
        if all(parent in outcomes and outcomes[parent].state in PASSING_STATES for parent in node.parents)
    }
    # A parent's consumer may claim one between the reads above: only what this round sent is news.
    if stranded and (sent_now := enqueue(app, run_id, stranded, idle_wait=spec.idle_countdown)):
        log.warning("run %s: sent %d consumer(s) whose parents all passed", run_id, sent_now)


def _expire(app: Celery, store: StatusStore, run_id: str, uids: list[str]) -> None:
    """End every open node of a run whose deadline passed (their consumers may be gone)."""
    from dbt_celery.errors import WaitTimedOut

    outcomes = store.outcomes(run_id, uids)
    ended = []
    for uid in uids:
        if uid in outcomes:
            continue
        outcome = NodeOutcome(
            NodeState.FAILED, WaitTimedOut.reason, message="the run's timeout passed", recorded_at=time.time()
        )
        if store.put_outcome(run_id, uid, outcome):
            # Its consumer may be gone with its worker: record the failure, then let a live one report it.
            app.backend.mark_as_failure(consumer_task_id(run_id, uid), WaitTimedOut(f"{uid}: the run's timeout passed"))
            ended.append(uid)
    nodes, _ = read_nodes(store, run_id, ended)
    for uid in ended:
        send_consumer(app, run_id, nodes.get(uid) or GraphNode.placeholder(uid))
