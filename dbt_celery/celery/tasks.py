"""The Celery glue: dbt-celery's tasks, their names, queues and messages.

* ``dbt_celery.produce`` runs a run's single ``dbt build`` (:mod:`dbt_celery.dbt.producer`).
* ``dbt_celery.consume`` reflects one node: it polls by rescheduling itself (RETRY in
  Flower, never holding a worker slot) and carries its :class:`Attempt` in a message
  header, so polls never spend the retry budget.
* ``dbt_celery.watch`` is a run's watchdog: it re-sends consumers whose messages were
  lost, resumes a dead producer, and ends the run at its deadline.
* ``dbt_celery.start_run`` starts a run from a JSON spec (celery beat, ``send_task``).

Decisions come from :mod:`dbt_celery.core.policy`; this module reads, asks, and does.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

from celery import Celery, Task, shared_task
from celery.exceptions import Ignore, Retry
from celery.result import AsyncResult, GroupResult
from celery.signals import worker_init
from kombu.exceptions import OperationalError

from dbt_celery.celery.backends import is_transient, store_for
from dbt_celery.celery.kombu_fix import keep_workers_alive_across_redis_restarts
from dbt_celery.celery.queues import Queues
from dbt_celery.core.overlap import take_turn, target_key
from dbt_celery.core.plan import (
    GraphNode,
    children_of,
    consumer_task_id,
    fail_descendants,
    load_nodes,
    plan_summary,
    producer_task_id,
    read_nodes,
    ready_children,
)
from dbt_celery.core.policy import Action, Attempt, Decision, Limits, Observation, after_build, decide, on_crash
from dbt_celery.core.records import PASSING_STATES, NodeOutcome, NodeState, ProducerPhase, ProducerState, RunDocument
from dbt_celery.core.spec import DEFAULT_POLL_MAX, RunSpec
from dbt_celery.core.store import PRODUCER_LEASE, WATCHDOG, Poll, StatusStore
from dbt_celery.core.summary import summarize
from dbt_celery.errors import (
    ConfigurationError,
    NodeError,
    PayloadError,
    RunCancelled,
    StoreUnavailable,
    UpstreamFailed,
)

log = logging.getLogger(__name__)

#: The message header a consumer carries its attempt in (never shown in Flower).
ATTEMPT_HEADER = "dbt_celery_attempt"
#: Seconds between two checks of a producer waiting for an earlier run of its target.
TURN_POLL = 2.0
#: Seconds between two rounds of a run's watchdog.
WATCH_INTERVAL = 15.0
#: Seconds between two "still alive" marks of a polling consumer.
SEEN_EVERY = 10.0
#: Seconds without a watchdog round after which a consumer or the producer sends a new watchdog.
WATCHDOG_SILENCE = 3 * WATCH_INTERVAL


# -- the producer ---------------------------------------------------------------------------
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


# -- consumers ------------------------------------------------------------------------------
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


class Consumer:
    """One delivery of a node's consumer: read, decide, carry out."""

    def __init__(self, task: Task, run_id: str, unique_id: str) -> None:
        self.task, self.run_id, self.unique_id = task, run_id, unique_id
        self.app: Celery = task.app
        self.store = store_for(task.app)
        self.queues = Queues.of(task.app)
        headers = dict(task.request.headers or {})
        self.attempt = Attempt(
            **{k: v for k, v in (headers.get(ATTEMPT_HEADER) or {}).items() if k in Attempt.__dataclass_fields__}
        )
        self.seen_at = float(headers.get("dbt_celery_seen_at") or 0)
        self.poll: Poll | None = None
        self.spec: RunSpec | None = None

    def run(self) -> dict[str, Any]:
        """Carry out one delivery; anything unexpected ends the node as ``error``."""
        try:
            return self._decide_and_act()
        except (Ignore, Retry, NodeError):
            raise  # how this task reschedules itself, or ends as the policy said
        except Exception as exc:  # noqa: BLE001 - becomes the node's outcome
            run = self.poll.run if self.poll is not None else None
            if is_transient(exc) and (run is None or time.time() < run.deadline):
                log.warning("run %s node %s: store unavailable (%r); polling again", self.run_id, self.unique_id, exc)
                raise self._retry(
                    self.attempt.polled(), min(5.0, DEFAULT_POLL_MAX * (1 + self.attempt.polls))
                ) from None
            log.exception("run %s node %s: consumer crashed", self.run_id, self.unique_id)
            return self._act(on_crash(self.attempt, f"consumer crashed: {type(exc).__name__}: {exc}"))

    def _decide_and_act(self) -> dict[str, Any]:
        now = time.time()
        self.poll = poll = self.store.poll(self.run_id, self.unique_id, self.attempt.builds + 1)
        if poll.run is None:
            raise ConfigurationError(f"run {self.run_id} is unknown to this store (expired, or another store)")
        self.spec = spec = RunSpec.from_dict(poll.run.spec)
        routing_key = (self.task.request.delivery_info or {}).get("routing_key")
        seen = Observation(
            now=now,
            event=poll.event,
            producer=poll.producer,
            producer_alive=poll.producer_liveness.alive(now),
            outcome=poll.outcome,
            cancelled=poll.cancelled,
            build_alive=poll.build.alive(now),
            build_done=bool(poll.build.lease and poll.build.lease.done),
            on_fallback_queue=bool(self.queues.fallback) and routing_key == self.queues.fallback,
        )
        return self._act(decide(seen, self.attempt, self._limits(spec, poll.run)))

    def _limits(self, spec: RunSpec, run: RunDocument) -> Limits:
        return Limits(spec.retries, spec.retry_delay, spec.poll_max, run.deadline, bool(self.queues.fallback))

    def _act(self, decision: Decision) -> dict[str, Any]:
        action = decision.action
        if action is Action.IGNORE:
            raise Ignore()
        if action in (Action.WAIT, Action.RESUME):
            if action is Action.RESUME and self.spec is not None and self.poll is not None:
                resume_producer(self.app, self.store, self.run_id, self.spec)
            self._mark_seen(decision.next)
            if self.spec is not None and self.poll is not None:
                revive_watchdog(self.app, self.store, self.run_id, self.spec, self.poll.watchdog_seen_at)
            raise self._retry(decision.next, decision.countdown)
        if action is Action.RETRY:
            assert decision.error is not None
            error = decision.error(f"{self.unique_id}: {decision.reason}")
            raise self._retry(decision.next, decision.countdown, exc=error, queue=self.queues.consumer)
        if action is Action.MOVE:
            raise self._retry(decision.next, 0, queue=self.queues.fallback)
        if action is Action.BUILD:
            return self._build()
        return self._finish(decision)

    def _build(self) -> dict[str, Any]:
        from dbt_celery.dbt.fallback import build_node

        assert self.spec is not None and self.poll is not None and self.poll.run is not None
        run, node = self.poll.run, self._node()
        event = build_node(self.store, self.spec, self.run_id, node, self.attempt.builds + 1, run.deadline)
        if event is None:  # another delivery holds (or finished) this build: look again
            raise self._retry(self.attempt.polled(), self.spec.poll_max)
        self.poll = dataclasses.replace(self.poll, event=event)
        return self._act(after_build(event, self.attempt, self._limits(self.spec, run)))

    def _finish(self, decision: Decision) -> dict[str, Any]:
        try:
            node: GraphNode | None = self._node()
        except (PayloadError, ConfigurationError) as exc:
            node = None  # without its plan entry this consumer cannot release its children
            if decision.state is not NodeState.ERROR:
                decision = on_crash(self.attempt, f"consumer crashed: {exc}")
        assert decision.state is not None
        event = self.poll.event if self.poll is not None else None
        attempt = decision.next
        outcome = NodeOutcome.of(
            decision.state, decision.error.reason if decision.error else decision.state.value, event,
            polls=attempt.polls, retries=attempt.retries, builds=attempt.builds, recorded_at=time.time(),
        )  # fmt: skip
        if decision.error is not None and (
            event is None or decision.state is not NodeState.FAILED or not event.message
        ):
            outcome = outcome.replace(message=decision.reason)
        first = self.store.put_outcome(self.run_id, self.unique_id, outcome)
        if not first:
            raise Ignore()  # another copy of this consumer resolved the node first
        if decision.action is Action.SUCCEED and node is not None:
            ready = ready_children(self.store, self.run_id, node)
            enqueue(self.app, self.run_id, {child.unique_id: child for child in ready})
            return outcome.to_dict()
        children = node.children if node is not None else children_of(self.store, self.run_id, self.unique_id)
        for uid in fail_descendants(self.store, self.run_id, self.unique_id, children, decision.state):
            message = f"not built: upstream node {self.unique_id} ended {decision.state.value}"
            error = RunCancelled if decision.state is NodeState.CANCELLED else UpstreamFailed
            self.app.backend.mark_as_failure(consumer_task_id(self.run_id, uid), error(f"{uid}: {message}"))
        assert decision.error is not None
        raise decision.error(f"{self.unique_id}: {outcome.message or decision.reason}")

    def _node(self) -> GraphNode:
        nodes = load_nodes(self.store, self.run_id, [self.unique_id])
        if self.unique_id not in nodes:
            raise ConfigurationError(f"run {self.run_id} has no plan entry for {self.unique_id}")
        return nodes[self.unique_id]

    def _mark_seen(self, attempt: Attempt) -> None:
        every = min(SEEN_EVERY, self.spec.rearm_after / 3) if self.spec is not None else SEEN_EVERY
        if time.time() - self.seen_at >= every:
            self.seen_at = time.time()
            self.store.mark_seen(self.run_id, self.unique_id, self._headers(attempt))

    def _headers(self, attempt: Attempt) -> dict[str, Any]:
        headers = dict(self.task.request.headers or {})
        return {**headers, ATTEMPT_HEADER: attempt.__dict__, "dbt_celery_seen_at": self.seen_at}

    def _retry(self, attempt: Attempt, countdown: float, **options: Any) -> BaseException:
        return self.task.retry(countdown=countdown, headers=self._headers(attempt), **options)


def enqueue(app: Celery, run_id: str, nodes: Any, ids: Iterable[str] | None = None) -> None:
    """Send the consumer of each node (all of ``nodes``, or those in ``ids``) that nobody sent yet."""
    store = store_for(app)
    for uid in ids if ids is not None else list(nodes):
        node: GraphNode = nodes[uid]
        if store.claim(run_id, f"enqueue_{uid}"):
            send_consumer(app, run_id, node)


def send_consumer(app: Celery, run_id: str, node: GraphNode, headers: dict[str, Any] | None = None) -> None:
    """Send (or send again) the consumer of one node, under its deterministic task id."""
    _publish(
        app,
        "dbt_celery.consume",
        kwargs={"run_id": run_id, "unique_id": node.unique_id},
        task_id=consumer_task_id(run_id, node.unique_id),
        queue=Queues.of(app).consumer,
        shadow=f"dbt {node.resource_type} {node.name}",
        headers=headers,
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


# -- the watchdog ---------------------------------------------------------------------------
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
        shadow=f"dbt watch {Path(spec.project_dir).name}",
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
        _rearm(app, store, run_id, list(planned), spec.rearm_after, now)


def _rearm(app: Celery, store: StatusStore, run_id: str, uids: list[str], after: float, now: float) -> None:
    """Send again every consumer that went silent, and send those nobody sent though they may go.

    A consumer is silent when it was sent, has no outcome, and showed no sign of life for
    ``after`` seconds (its message died with a worker, or its publish failed). A node is
    stranded when its parents all passed but its consumer was never sent (a parent's
    consumer broke between recording its outcome and releasing its children).
    """
    claims = store.claims(run_id, [f"enqueue_{uid}" for uid in uids])
    outcomes = store.outcomes(run_id, uids)
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
    if stranded:
        log.warning("run %s: sending %d consumer(s) whose parents all passed", run_id, len(stranded))
        enqueue(app, run_id, stranded)


def _expire(app: Celery, store: StatusStore, run_id: str, uids: list[str]) -> None:
    """End every open node of a run whose deadline passed (their consumers may be gone)."""
    from dbt_celery.errors import WaitTimedOut

    outcomes = store.outcomes(run_id, uids)
    for uid in uids:
        if uid in outcomes:
            continue
        outcome = NodeOutcome(
            NodeState.FAILED, WaitTimedOut.reason, message="the run's timeout passed", recorded_at=time.time()
        )
        if store.put_outcome(run_id, uid, outcome):
            app.backend.mark_as_failure(consumer_task_id(run_id, uid), WaitTimedOut(f"{uid}: the run's timeout passed"))


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
