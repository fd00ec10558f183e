"""The consumer's policy: given what the store says, what should a consumer do now?

A pure function with no Celery or dbt in it, so every branch is testable on its own.
The Celery task (:mod:`dbt_celery.tasks`) carries the decision out:

* ``WAIT``: reschedule with a countdown (a poll; never counts as a retry);
* ``SUCCEED``: the node passed (or was skipped); let the children go;
* ``RETRY``: a genuine retry after a failure; the retry will fall back once it may;
* ``FALLBACK``: build the node inline (the producer is done and cannot help any more);
* ``FAIL``: the node failed for good; its descendants end ``upstream_failed``.

The rules (each one a bug the reference design shipped): fall back only once the
producer is terminal; never fail while the node could still change; polls never
consume real retries; every terminal state says which failure it is.
"""

from __future__ import annotations

import dataclasses
import enum

from dbt_celery.errors import NodeError, NodeFailed, ProducerFailed, UpstreamFailed, WaitTimedOut
from dbt_celery.events import PASSING_OUTCOMES, NodeEvent, Outcome
from dbt_celery.store import ProducerState

#: First countdown between polls, in seconds; it grows by POLL_BACKOFF up to poll_max.
FIRST_POLL_DELAY = 0.1
POLL_BACKOFF = 2.0


class Action(str, enum.Enum):
    """What a consumer does next."""

    WAIT = "wait"
    SUCCEED = "succeed"
    RETRY = "retry"
    FALLBACK = "fallback"
    FAIL = "fail"


@dataclasses.dataclass(frozen=True)
class Attempt:
    """Where a consumer stands: polls so far, real retries so far, run deadline (epoch s)."""

    polls: int
    retries: int
    deadline: float


@dataclasses.dataclass(frozen=True)
class Limits:
    """The run's knobs that the policy needs, from its RunSpec."""

    retries: int
    retry_delay: float
    heartbeat_timeout: float
    poll_max: float


@dataclasses.dataclass(frozen=True)
class Decision:
    """The policy's answer: an action, a countdown for WAIT/RETRY, and why."""

    action: Action
    countdown: float = 0.0
    error: type[NodeError] | None = None
    reason: str = ""


def poll_countdown(polls: int, poll_max: float) -> float:
    """Seconds before the next poll: short at first, backing off to ``poll_max``."""
    return min(poll_max, FIRST_POLL_DELAY * POLL_BACKOFF**polls)


def decide(
    event: NodeEvent | None,
    producer: ProducerState | None,
    attempt: Attempt,
    limits: Limits,
    now: float,
) -> Decision:
    """Decide a consumer's next step from its node's record and the producer's state."""
    terminal = producer is not None and producer.is_terminal(limits.heartbeat_timeout, now)
    wait = Decision(Action.WAIT, poll_countdown(attempt.polls, limits.poll_max), reason="waiting for dbt")

    if event is not None and event.outcome in PASSING_OUTCOMES:
        return Decision(Action.SUCCEED, reason=event.outcome.value)
    if now > attempt.deadline:
        return Decision(Action.FAIL, error=WaitTimedOut, reason="the run's timeout passed")

    if event is None and not terminal:
        return wait
    if event is not None and event.outcome is Outcome.UPSTREAM_FAILED and event.resolved_by == "producer":
        if limits.retries == 0:
            # Without retries no parent was rebuilt: what failed lies outside the plan
            # (an ephemeral model dbt inlines), and dbt's verdict stands.
            return Decision(Action.FAIL, error=UpstreamFailed, reason=event.message or "an upstream node failed")
        # This consumer starts only after its parents' consumers passed, so whatever
        # failed upstream has been repaired since: build the node once dbt is done.
        return Decision(Action.FALLBACK, reason="upstream repaired") if terminal else wait

    error, reason = _failure(event, producer)
    if attempt.retries == 0:
        if limits.retries > 0:
            return Decision(Action.RETRY, limits.retry_delay, error=error, reason=reason)
        return Decision(Action.FAIL, error=error, reason=reason)
    # On a retry: build inline, but only once the producer can no longer touch the node.
    return Decision(Action.FALLBACK, reason=reason) if terminal else wait


def after_fallback(event: NodeEvent, attempt: Attempt, limits: Limits) -> Decision:
    """Decide what follows a consumer's own build of its node."""
    if event.outcome in PASSING_OUTCOMES:
        return Decision(Action.SUCCEED, reason=event.outcome.value)
    # Every inline build spends one retry, also one that followed a repaired upstream
    # (reached without a retry of its own).
    if max(attempt.retries, 1) < limits.retries:
        return Decision(Action.RETRY, limits.retry_delay, error=NodeFailed, reason="fallback build failed")
    return Decision(Action.FAIL, error=NodeFailed, reason="fallback build failed")


def _failure(event: NodeEvent | None, producer: ProducerState | None) -> tuple[type[NodeError], str]:
    if event is None:
        state = producer.state if producer else "missing"
        return ProducerFailed, f"the producer ended ({state}) without reporting the node"
    if event.outcome is Outcome.NOT_RUN:
        return ProducerFailed, event.message or "dbt never ran the node"
    if event.outcome is Outcome.UPSTREAM_FAILED:
        return NodeFailed, "dbt skipped the node because an upstream node failed"
    return NodeFailed, event.message or f"dbt reported {event.dbt_status}"
