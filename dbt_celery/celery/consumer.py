"""A consumer's delivery: read the store, ask the policy, carry the decision out.

The ``dbt_celery.consume`` task (:mod:`dbt_celery.celery.tasks`) hands each delivery to
:class:`Consumer`. It polls by sending itself again with a countdown (never holding a
worker slot, never shown as a retry) and carries its :class:`~dbt_celery.core.policy.Attempt`
in a message header, so polls never spend the retry budget. Every node that does not
pass ends its task in FAILURE, its descendants' tasks included (each reports itself). Decisions come from
:mod:`dbt_celery.core.policy`; this module only reads, asks and does.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from typing import Any

from celery import Celery, Task
from celery.exceptions import Ignore, Retry
from celery.worker.request import Request
from celery.worker.state import task_ready

from dbt_celery.celery.backends import is_transient, store_for
from dbt_celery.celery.messages import enqueue, resend, resume_producer, revive_watchdog, send_consumer
from dbt_celery.celery.queues import Queues
from dbt_celery.core.plan import (
    GraphNode,
    children_of,
    fail_descendants,
    load_nodes,
    ready_children,
)
from dbt_celery.core.policy import Action, Attempt, Decision, Limits, Observation, after_build, decide, on_crash
from dbt_celery.core.records import NodeOutcome, NodeState, RunDocument
from dbt_celery.core.spec import DEFAULT_IDLE_WAIT, DEFAULT_POLL_MAX, RunSpec
from dbt_celery.core.store import Poll
from dbt_celery.errors import (
    ConfigurationError,
    NodeError,
    PayloadError,
)

log = logging.getLogger(__name__)

#: The message header a consumer carries its attempt in (never shown in Flower).
ATTEMPT_HEADER = "dbt_celery_attempt"
#: Seconds between two "still alive" marks of a polling consumer.
SEEN_EVERY = 10.0
#: How many ended consumer tasks a worker process remembers (see :func:`ended_here`).
ENDED_KEPT = 50_000
_ENDED: collections.OrderedDict[str, None] = collections.OrderedDict()
_ENDED_LOCK = threading.Lock()


def ended_here(task_id: str | None) -> bool:
    """Whether a delivery in this process already ended this consumer task (outcome recorded and reported).

    A woken consumer's waiting copy still arrives when its countdown ends; it drops itself
    at once, without reading the store. Nothing reopens an ended node, so this never hides work.
    """
    with _ENDED_LOCK:
        return task_id is not None and task_id in _ENDED


class ConsumerRequest(Request):
    """The worker's request for a consumer message: a copy this process already ended never runs.

    A woken consumer's waiting copy is held by the worker until its countdown ends. When
    the pool is in this process (``-P threads`` or ``solo``, dbt-celery's default), the copy is
    acknowledged and dropped here, before the pool sees it: no execution, no task event, no
    write. Celery's own revocation would mark the task REVOKED; this leaves its result alone.
    Under ``-P prefork`` the ending happened in a child, so the copy runs and drops itself there.
    """

    def revoked(self) -> bool:
        """Whether to skip this message: an ended copy (dropped quietly), or revoked the Celery way."""
        if not self._already_revoked and ended_here(self.id):  # type: ignore[has-type]
            task_ready(self)
            self.acknowledge()
            self._already_revoked = True
            return True
        return bool(super().revoked())


def _remember_ended(task_id: str | None) -> None:
    if task_id is None:
        return
    with _ENDED_LOCK:
        _ENDED[task_id] = None
        while len(_ENDED) > ENDED_KEPT:
            _ENDED.popitem(last=False)


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
        if ended_here(self.task.request.id):
            raise Ignore()
        try:
            return self._decide_and_act()
        except (Ignore, Retry, NodeError):
            raise  # how this task reschedules itself, or ends as the policy said
        except Exception as exc:  # noqa: BLE001 - becomes the node's outcome
            run = self.poll.run if self.poll is not None else None
            if is_transient(exc) and (run is None or time.time() < run.deadline):
                log.warning("run %s node %s: store unavailable (%r); polling again", self.run_id, self.unique_id, exc)
                raise self._reschedule(
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
            reported=poll.reported,
            cancelled=poll.cancelled,
            build_alive=poll.build.alive(now),
            build_done=bool(poll.build.lease and poll.build.lease.done),
            on_fallback_queue=bool(self.queues.fallback) and routing_key == self.queues.fallback,
        )
        return self._act(decide(seen, self.attempt, self._limits(spec, poll.run)))

    def _limits(self, spec: RunSpec, run: RunDocument) -> Limits:
        return Limits(
            spec.retries, spec.retry_delay, spec.poll_max, run.deadline, bool(self.queues.fallback), spec.idle_countdown
        )

    def _act(self, decision: Decision) -> dict[str, Any]:
        action = decision.action
        if action is Action.IGNORE:
            _remember_ended(self.task.request.id)
            raise Ignore()
        if action in (Action.WAIT, Action.RESUME):
            if action is Action.RESUME and self.spec is not None and self.poll is not None:
                resume_producer(self.app, self.store, self.run_id, self.spec)
            self._mark_seen(decision.next)
            if self.spec is not None and self.poll is not None:
                revive_watchdog(self.app, self.store, self.run_id, self.spec, self.poll.watchdog_seen_at)
            raise self._reschedule(decision.next, decision.countdown)
        if action is Action.REPORT:
            return self._report(decision)
        if action is Action.RETRY:
            assert decision.error is not None
            error = decision.error(f"{self.unique_id}: {decision.reason}")
            raise self._retry(decision.next, decision.countdown, exc=error, queue=self.queues.consumer)
        if action is Action.MOVE:
            raise self._reschedule(decision.next, 0, queue=self.queues.fallback)
        if action is Action.BUILD:
            return self._build()
        return self._finish(decision)

    def _build(self) -> dict[str, Any]:
        from dbt_celery.dbt.fallback import build_node

        assert self.spec is not None and self.poll is not None and self.poll.run is not None
        run, node = self.poll.run, self._node()
        event = build_node(self.store, self.spec, self.run_id, node, self.attempt.builds + 1, run.deadline)
        if event is None:  # another delivery holds (or finished) this build: look again
            raise self._reschedule(self.attempt.polled(), self.spec.poll_max)
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
        if not self.store.resolve(self.run_id, self.unique_id, outcome):
            raise Ignore()  # another copy of this consumer resolved the node first
        if decision.action is Action.SUCCEED and node is not None:
            ready = ready_children(self.store, self.run_id, node)
            idle = self.spec.idle_countdown if self.spec is not None else DEFAULT_IDLE_WAIT
            enqueue(self.app, self.run_id, {child.unique_id: child for child in ready}, idle_wait=idle)
            _remember_ended(self.task.request.id)  # only now: a store blip above re-sends this delivery
            return outcome.to_dict()
        children = node.children if node is not None else children_of(self.store, self.run_id, self.unique_id)
        for descendant in fail_descendants(self.store, self.run_id, self.unique_id, children, decision.state):
            send_consumer(self.app, self.run_id, descendant)  # it ends its own task: FAILURE, signals, events
        _remember_ended(self.task.request.id)
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
        # Only dbt-celery's own: a broker's headers (RabbitMQ's x-death) must not ride along.
        return {ATTEMPT_HEADER: attempt.__dict__, "dbt_celery_seen_at": self.seen_at}

    def _report(self, decision: Decision) -> dict[str, Any]:
        """End this task as the outcome recorded for the node says (once per node)."""
        if not self.store.claim_report(self.run_id, self.unique_id):
            raise Ignore()
        _remember_ended(self.task.request.id)
        assert decision.error is not None
        raise decision.error(f"{self.unique_id}: {decision.reason}")

    def _retry(self, attempt: Attempt, countdown: float, **options: Any) -> BaseException:
        """A genuine retry after a failure: RETRY in Flower, with the failure as its reason."""
        return self.task.retry(countdown=countdown, headers=self._headers(attempt), **options)

    def _reschedule(self, attempt: Attempt, countdown: float, queue: str | None = None) -> BaseException:
        """A poll: this consumer again in ``countdown`` seconds, carrying ``attempt`` (see :func:`resend`)."""
        return resend(self.task, countdown, queue=queue, headers=self._headers(attempt))
