"""The consumer's lifecycle: what a consumer does next, decided from what it read.

A pure module (no Celery, no dbt, no clock of its own), so every transition is a row
of a table test. :mod:`dbt_celery.celery.consumer` reads the store, asks :func:`decide`
(or :func:`after_build` once it built its node, or :func:`on_crash` when anything
broke), and carries the :class:`Decision` out; the decision carries the next
:class:`Attempt`, so the task does no arithmetic of its own.

The rules, each one a bug the reference design shipped: build inline only once the
producer can no longer touch the node; never fail while the node could still change;
polls never spend retries; a dead producer is resumed before nodes fall back one by
one; every terminal state says which failure it is.

:data:`TRANSITIONS` lists every rule; ``docs/architecture.md`` draws it
(:func:`mermaid`), and the table test proves each rule is reachable.
"""

from __future__ import annotations

import dataclasses
import enum

from dbt_celery.core.records import PASSING_STATES, NodeEvent, NodeOutcome, NodeState, ProducerPhase, ProducerState
from dbt_celery.core.spec import DEFAULT_IDLE_WAIT
from dbt_celery.errors import (
    ConsumerCrashed,
    NodeError,
    NodeFailed,
    ProducerFailed,
    RunCancelled,
    UpstreamFailed,
    WaitTimedOut,
)

#: First countdown between polls, in seconds; it grows by POLL_BACKOFF up to the run's poll_max.
FIRST_POLL_DELAY = 0.1
POLL_BACKOFF = 2.0
#: Lease generations a run's producer may have: its first build and the resumptions after it died.
MAX_PRODUCER_GENERATIONS = 3


class Action(str, enum.Enum):
    """What a consumer does next."""

    WAIT = "wait"  # reschedule with a countdown (a poll; never a retry)
    REPORT = "report"  # end the task as the outcome someone else recorded says (no writes)
    RESUME = "resume"  # the producer died: ask for a resumed producer, then wait
    RETRY = "retry"  # a genuine retry after a failure
    MOVE = "move"  # go to the fallback queue to build there
    BUILD = "build"  # build the node inline
    SUCCEED = "succeed"  # the node passed: let the children go
    FAIL = "fail"  # the node ended without passing: its descendants end upstream_failed
    IGNORE = "ignore"  # a stale copy of a consumer whose node is already resolved


@dataclasses.dataclass(frozen=True)
class Attempt:
    """Where a consumer stands, carried from one message to the next in its headers."""

    polls: int = 0
    retries: int = 0
    builds: int = 0
    moved: bool = False

    def polled(self) -> Attempt:
        """The attempt after one more poll."""
        return dataclasses.replace(self, polls=self.polls + 1)

    def retried(self) -> Attempt:
        """The attempt after a genuine retry (polls start again)."""
        return dataclasses.replace(self, polls=0, retries=self.retries + 1, moved=False)

    def built(self) -> Attempt:
        """The attempt after one inline build."""
        return dataclasses.replace(self, builds=self.builds + 1, moved=False)


@dataclasses.dataclass(frozen=True)
class Limits:
    """The run's knobs the policy needs, from its spec and its app."""

    retries: int
    retry_delay: float
    poll_max: float
    deadline: float
    fallback_queue: bool = False
    #: Countdown while dbt has not reached the node: the producer wakes the consumer sooner.
    idle_wait: float = DEFAULT_IDLE_WAIT


@dataclasses.dataclass(frozen=True)
class Observation:
    """What one poll read from the store (one round trip)."""

    now: float
    event: NodeEvent | None = None
    producer: ProducerState | None = None
    producer_alive: bool = False
    outcome: NodeOutcome | None = None
    #: Whether a delivery of this consumer already ended its task as the outcome says.
    reported: bool = True
    cancelled: bool = False
    build_alive: bool = False
    build_done: bool = False
    on_fallback_queue: bool = False


@dataclasses.dataclass(frozen=True)
class Decision:
    """The policy's answer: what to do, the attempt that follows, and which rule said so."""

    action: Action
    rule: str
    next: Attempt
    countdown: float = 0.0
    state: NodeState | None = None
    error: type[NodeError] | None = None
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class Transition:
    """One rule of the lifecycle: from which consumer state, by which action, when."""

    rule: str
    source: str
    action: Action
    when: str


_TARGETS = {
    Action.WAIT: "Waiting",
    Action.RESUME: "Waiting",
    Action.RETRY: "Retrying",
    Action.MOVE: "Moving",
    Action.BUILD: "Building",
    Action.SUCCEED: "Succeeded",
    Action.FAIL: "Failed",
    Action.IGNORE: "Ignored",
    Action.REPORT: "Failed",
}
_POLLING = "Waiting"  # a consumer message arriving: first delivery, poll, retry or move

#: Every rule of the consumer's lifecycle, in the order :func:`decide` tries them.
TRANSITIONS = (
    Transition("stale", _POLLING, Action.IGNORE, "outcome already recorded and reported"),
    Transition("report", _POLLING, Action.REPORT, "outcome recorded for it (upstream failed, cancelled, timed out)"),
    Transition("passed", _POLLING, Action.SUCCEED, "record success / warn / skipped"),
    Transition("stopping", _POLLING, Action.WAIT, "cancelled or past the deadline, producer still stopping dbt"),
    Transition("cancelled", _POLLING, Action.FAIL, "run cancelled"),
    Transition("timed_out", _POLLING, Action.FAIL, "run deadline passed"),
    Transition("producer_dead", _POLLING, Action.RESUME, "producer lease expired, generations left"),
    Transition("waiting", _POLLING, Action.WAIT, "no record, producer alive"),
    Transition("upstream_stands", _POLLING, Action.FAIL, "dbt skipped it (upstream failed), no retries"),
    Transition("first_failure", _POLLING, Action.RETRY, "record failed / not_run, or producer gone; retries left"),
    Transition("no_retries", _POLLING, Action.FAIL, "same, no retries"),
    Transition("producer_busy", _POLLING, Action.WAIT, "wants to build, producer still alive"),
    Transition("move", _POLLING, Action.MOVE, "wants to build, not on the fallback queue"),
    Transition("build_busy", _POLLING, Action.WAIT, "another delivery is building the node"),
    Transition("build_done", _POLLING, Action.WAIT, "another delivery built the node; its outcome follows"),
    Transition("build", _POLLING, Action.BUILD, "producer ended or gone; upstream repaired or retrying"),
    Transition("built", "Building", Action.SUCCEED, "inline build passed"),
    Transition("build_failed", "Building", Action.RETRY, "inline build failed, builds left"),
    Transition("builds_spent", "Building", Action.FAIL, "inline build failed, none left"),
    Transition("crashed", "any state", Action.FAIL, "anything raised (state error)"),
)
_RULES = {transition.rule: transition for transition in TRANSITIONS}
_ERRORS_BY_REASON: dict[str, type[NodeError]] = {
    error.reason: error
    for error in (NodeFailed, UpstreamFailed, ProducerFailed, WaitTimedOut, RunCancelled, ConsumerCrashed)
}


def poll_countdown(polls: int, poll_max: float) -> float:
    """Seconds before the next poll: short at first, backing off to ``poll_max``."""
    return min(poll_max, FIRST_POLL_DELAY * POLL_BACKOFF**polls)


def producer_gone(producer: ProducerState | None, alive: bool) -> bool:
    """Whether a producer will report nothing more: it ended, or died with no generation left."""
    if producer is None:
        return False
    if producer.ended:
        return True
    return _dead(producer, alive) and producer.generation >= MAX_PRODUCER_GENERATIONS


def decide(seen: Observation, attempt: Attempt, limits: Limits) -> Decision:
    """Decide a consumer's next step from one poll's observation."""
    event, producer = seen.event, seen.producer
    if seen.outcome is not None:
        if not seen.reported:
            outcome = seen.outcome
            error = _ERRORS_BY_REASON.get(outcome.reason, NodeFailed)
            return _final("report", attempt, outcome.state, error, outcome.message or outcome.reason)
        return _decision("stale", attempt, reason="the node is already resolved")
    if event is not None and event.outcome in PASSING_STATES:
        return _decision("passed", attempt, state=event.outcome, reason=event.outcome.value)
    if seen.cancelled or seen.now > limits.deadline:
        if event is None and seen.producer_alive and producer is not None and not producer.ended:
            # dbt finishes the nodes in flight before it stops: this one may still pass.
            return _poll("stopping", attempt, limits, "the producer is stopping dbt")
        if seen.cancelled:
            return _final("cancelled", attempt, NodeState.CANCELLED, RunCancelled, "the run was cancelled")
        return _final("timed_out", attempt, NodeState.FAILED, WaitTimedOut, "the run's timeout passed")
    if producer is not None and _dead(producer, seen.producer_alive) and not producer_gone(producer, False):
        return _poll("producer_dead", attempt, limits, "the producer died; resuming it")

    gone = producer_gone(producer, seen.producer_alive)
    if event is None and not gone:
        countdown = limits.idle_wait if seen.producer_alive else poll_countdown(attempt.polls, limits.poll_max)
        return _decision("waiting", attempt.polled(), countdown=countdown, reason="waiting for dbt")
    if event is not None and event.outcome is NodeState.UPSTREAM_FAILED and event.resolved_by == "producer":
        if limits.retries == 0:
            # Without retries no parent was rebuilt: what failed lies outside the plan
            # (an ephemeral model dbt inlines), and dbt's verdict stands.
            message = event.message or "an upstream node failed"
            return _final("upstream_stands", attempt, NodeState.UPSTREAM_FAILED, UpstreamFailed, message)
        # This consumer starts only after its parents' consumers passed, so whatever
        # failed upstream has been repaired since: build the node once dbt is done.
        return _build(seen, attempt, limits, gone, "upstream repaired")

    state, error, reason = _failure(event, producer)
    if attempt.retries == 0 and attempt.builds == 0:
        if limits.retries > 0:
            return _decision(
                "first_failure", attempt.retried(), countdown=limits.retry_delay, error=error, reason=reason
            )
        return _final("no_retries", attempt, state, error, reason)
    return _build(seen, attempt, limits, gone, reason)


def after_build(event: NodeEvent, attempt: Attempt, limits: Limits) -> Decision:
    """Decide what follows an inline build of the node (``attempt`` as it was before it)."""
    built = attempt.built()
    if event.outcome in PASSING_STATES:
        return _decision("built", built, state=event.outcome, reason=event.outcome.value)
    message = event.message or "the inline build failed"
    # Every inline build spends one retry, also one that followed a repaired upstream.
    if built.builds < limits.retries:
        return _decision(
            "build_failed", built.retried(), countdown=limits.retry_delay, error=NodeFailed, reason=message
        )
    return _final("builds_spent", built, NodeState.FAILED, NodeFailed, message)


def on_crash(attempt: Attempt, problem: str) -> Decision:
    """The decision for a consumer that broke: an ``error`` outcome saying what broke."""
    return _final("crashed", attempt, NodeState.ERROR, ConsumerCrashed, problem)


def mermaid() -> str:
    """The lifecycle as a mermaid state diagram, drawn from :data:`TRANSITIONS`."""
    lines = ["stateDiagram-v2", f"    [*] --> {_POLLING}: enqueued (parents passed)"]
    for transition in TRANSITIONS:
        source = "Waiting" if transition.source == "any state" else transition.source
        lines.append(f"    {source} --> {_TARGETS[transition.action]}: {transition.rule} ({transition.when})")
    lines += [
        "    Retrying --> Waiting: retry(countdown=retry_delay)",
        "    Moving --> Waiting: on the fallback queue",
        "    Succeeded --> [*]: children released",
        "    Failed --> [*]: descendants upstream_failed",
        "    Ignored --> [*]: nothing written",
    ]
    return "\n".join(lines)


# -- helpers ----------------------------------------------------------------------------
def _dead(producer: ProducerState, alive: bool) -> bool:
    return producer.phase in (ProducerPhase.PLANNING, ProducerPhase.RUNNING) and not alive


def _decision(rule: str, attempt: Attempt, **fields: object) -> Decision:
    return Decision(_RULES[rule].action, rule, attempt, **fields)  # type: ignore[arg-type]


def _final(rule: str, attempt: Attempt, state: NodeState, error: type[NodeError], reason: str) -> Decision:
    return _decision(rule, attempt, state=state, error=error, reason=reason)


def _poll(rule: str, attempt: Attempt, limits: Limits, reason: str) -> Decision:
    return _decision(rule, attempt.polled(), countdown=poll_countdown(attempt.polls, limits.poll_max), reason=reason)


def _build(seen: Observation, attempt: Attempt, limits: Limits, producer_gone: bool, reason: str) -> Decision:
    if not producer_gone:
        return _poll("producer_busy", attempt, limits, f"{reason}; the producer may still touch the node")
    if limits.fallback_queue and not seen.on_fallback_queue:
        return _decision("move", dataclasses.replace(attempt, moved=True), reason=reason)
    if seen.build_done:
        return _poll("build_done", attempt, limits, "another delivery built the node")
    if seen.build_alive:
        return _poll("build_busy", attempt, limits, "another delivery is building the node")
    return _decision("build", attempt, reason=reason)


def _failure(event: NodeEvent | None, producer: ProducerState | None) -> tuple[NodeState, type[NodeError], str]:
    if event is None:
        phase = producer.phase.value if producer else "missing"
        return NodeState.FAILED, ProducerFailed, f"the producer ended ({phase}) without reporting the node"
    if event.outcome is NodeState.NOT_RUN:
        return NodeState.NOT_RUN, ProducerFailed, event.message or "dbt never ran the node"
    if event.outcome is NodeState.UPSTREAM_FAILED:
        return NodeState.FAILED, NodeFailed, "dbt skipped the node because an upstream node failed"
    return NodeState.FAILED, NodeFailed, event.message or f"dbt reported {event.dbt_status}"


if __name__ == "__main__":  # python -m dbt_celery.core.policy: the diagram for docs/architecture.md
    print(mermaid())
