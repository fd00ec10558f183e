"""The consumer's lifecycle, rule by rule (pure: no Celery, no dbt, no services)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dbt_celery.core.policy import (
    MAX_PRODUCER_GENERATIONS,
    TRANSITIONS,
    Action,
    Attempt,
    Decision,
    Limits,
    Observation,
    after_build,
    decide,
    mermaid,
    on_crash,
    poll_countdown,
)
from dbt_celery.core.records import NodeEvent, NodeOutcome, NodeState, ProducerPhase, ProducerState
from dbt_celery.errors import ConsumerCrashed, NodeFailed, ProducerFailed, RunCancelled, UpstreamFailed, WaitTimedOut

NOW = 1_000_000.0
LIMITS = Limits(retries=1, retry_delay=2.0, poll_max=1.0, deadline=NOW + 3600)
FIRST, RETRIED = Attempt(), Attempt(retries=1)


def producer(phase: ProducerPhase, generation: int = 1) -> ProducerState:
    return ProducerState(phase, updated_at=NOW, generation=generation)


def event(state: NodeState, status: str = "x", resolved_by: str = "producer") -> NodeEvent:
    return NodeEvent("model.p.a", "model", status, state, message="dbt says so", resolved_by=resolved_by)


RUNNING = producer(ProducerPhase.RUNNING)
FINISHED = producer(ProducerPhase.FINISHED)
FAILED_NODE = event(NodeState.FAILED, "error")


def seen(
    node: NodeEvent | None = None, prod: ProducerState | None = RUNNING, alive: bool = True, **fields
) -> Observation:
    return Observation(now=NOW, event=node, producer=prod, producer_alive=alive, **fields)


# (name, observation, attempt, limits, rule, error)
CASES = [
    ("nothing yet, producer alive", seen(), FIRST, LIMITS, "waiting", None),
    ("an upstream failure was recorded for it", seen(outcome=NodeOutcome(NodeState.UPSTREAM_FAILED, "upstream_failed"), reported=False), FIRST, LIMITS, "report", UpstreamFailed),
    ("nothing yet while queued", seen(prod=producer(ProducerPhase.QUEUED), alive=False), FIRST, LIMITS, "waiting", None),
    ("nothing yet on a retry", seen(), RETRIED, LIMITS, "waiting", None),
    ("passed", seen(event(NodeState.SUCCESS, "success")), FIRST, LIMITS, "passed", None),
    ("skipped", seen(event(NodeState.SKIPPED, "skipped")), FIRST, LIMITS, "passed", None),
    ("already resolved", seen(outcome=NodeOutcome(NodeState.SUCCESS, "success")), FIRST, LIMITS, "stale", None),
    ("cancelled, dbt stopping", seen(cancelled=True), FIRST, LIMITS, "stopping", None),
    ("cancelled, producer ended", seen(prod=producer(ProducerPhase.CANCELLED), cancelled=True), FIRST, LIMITS, "cancelled", RunCancelled),
    ("cancelled, producer dead", seen(alive=False, cancelled=True), FIRST, LIMITS, "cancelled", RunCancelled),
    ("passed though cancelled", seen(event(NodeState.SUCCESS, "success"), cancelled=True), FIRST, LIMITS, "passed", None),
    ("deadline, dbt stopping", seen(), FIRST, Limits(1, 2.0, 1.0, deadline=NOW - 1), "stopping", None),
    ("deadline", seen(FAILED_NODE, FINISHED), FIRST, Limits(1, 2.0, 1.0, deadline=NOW - 1), "timed_out", WaitTimedOut),
    ("failed, retries left", seen(FAILED_NODE), FIRST, LIMITS, "first_failure", NodeFailed),
    ("failed, no retries", seen(FAILED_NODE), FIRST, Limits(0, 0, 1.0, NOW + 60), "no_retries", NodeFailed),
    ("retry while the producer lives", seen(FAILED_NODE), RETRIED, LIMITS, "producer_busy", None),
    ("retry once the producer ended", seen(FAILED_NODE, FINISHED), RETRIED, LIMITS, "build", None),
    ("dead producer: resume it", seen(prod=RUNNING, alive=False), FIRST, LIMITS, "producer_dead", None),
    ("dead producer on a retry: resume", seen(FAILED_NODE, RUNNING, alive=False), RETRIED, LIMITS, "producer_dead", None),
    (
        "dead producer, no generation left",
        seen(prod=producer(ProducerPhase.RUNNING, MAX_PRODUCER_GENERATIONS), alive=False),
        FIRST, LIMITS, "first_failure", ProducerFailed,
    ),
    ("not run, producer ended", seen(event(NodeState.NOT_RUN), FINISHED), FIRST, LIMITS, "first_failure", ProducerFailed),
    ("upstream repaired, producer busy", seen(event(NodeState.UPSTREAM_FAILED, "skipped")), FIRST, LIMITS, "producer_busy", None),
    ("upstream repaired, producer ended", seen(event(NodeState.UPSTREAM_FAILED, "skipped"), FINISHED), FIRST, LIMITS, "build", None),
    (
        "upstream skip without retries stands",
        seen(event(NodeState.UPSTREAM_FAILED, "skipped"), FINISHED), FIRST, Limits(0, 0, 1.0, NOW + 60),
        "upstream_stands", UpstreamFailed,
    ),
    (
        "build wanted, not on the fallback queue",
        seen(FAILED_NODE, FINISHED), RETRIED, Limits(1, 2.0, 1.0, NOW + 60, fallback_queue=True), "move", None,
    ),
    (
        "on the fallback queue, another delivery builds",
        seen(FAILED_NODE, FINISHED, on_fallback_queue=True, build_alive=True),
        RETRIED, Limits(1, 2.0, 1.0, NOW + 60, fallback_queue=True), "build_busy", None,
    ),
    (
        "another delivery built it and passed",
        seen(event(NodeState.SUCCESS, "success", "fallback"), FINISHED, build_done=True),
        RETRIED, LIMITS, "passed", None,
    ),
    (
        "another delivery built it and failed",
        seen(event(NodeState.FAILED, "error", "fallback"), FINISHED, build_done=True),
        RETRIED, LIMITS, "build_done", None,
    ),
]  # fmt: skip


@pytest.mark.parametrize("name, observation, attempt, limits, rule, error", CASES, ids=[c[0] for c in CASES])
def test_decide(name, observation, attempt, limits, rule, error):
    decision = decide(observation, attempt, limits)
    assert (decision.rule, decision.error) == (rule, error)
    assert decision.action is {t.rule: t.action for t in TRANSITIONS}[rule]


def test_polls_carry_the_next_attempt_and_never_spend_retries():
    decision = decide(
        seen(alive=False, prod=producer(ProducerPhase.QUEUED)), Attempt(polls=4, retries=1, builds=1), LIMITS
    )
    assert decision.next == Attempt(polls=5, retries=1, builds=1)
    assert decision.countdown == poll_countdown(4, LIMITS.poll_max)


def test_a_consumer_waiting_on_a_live_producer_looks_again_only_as_a_safety_net():
    # The producer wakes it when the node's record lands; the countdown is the long idle wait.
    decision = decide(seen(), Attempt(polls=1), LIMITS)
    assert (decision.rule, decision.countdown) == ("waiting", LIMITS.idle_wait)
    assert LIMITS.idle_wait > LIMITS.poll_max


@pytest.mark.parametrize(
    "outcome, error",
    [
        (
            NodeOutcome(NodeState.UPSTREAM_FAILED, "upstream_failed", message="upstream node x ended failed"),
            UpstreamFailed,
        ),
        (NodeOutcome(NodeState.CANCELLED, "cancelled", message="cancelled"), RunCancelled),
        (NodeOutcome(NodeState.FAILED, "timed_out", message="the run's timeout passed"), WaitTimedOut),
    ],
)
def test_an_outcome_recorded_for_a_node_is_reported_once_by_its_own_task(outcome, error):
    decision = decide(seen(outcome=outcome, reported=False), FIRST, LIMITS)
    assert (decision.rule, decision.action, decision.error, decision.state) == (
        "report",
        Action.REPORT,
        error,
        outcome.state,
    )
    assert decision.reason == outcome.message
    # Once reported, every later copy is dropped.
    assert decide(seen(outcome=outcome, reported=True), FIRST, LIMITS).rule == "stale"


def test_a_genuine_retry_resets_polls_and_counts_one_retry():
    decision = decide(seen(FAILED_NODE), Attempt(polls=7), LIMITS)
    assert (decision.action, decision.next, decision.countdown) == (Action.RETRY, Attempt(retries=1), 2.0)


def test_polls_back_off_to_the_cap():
    delays = [poll_countdown(n, 1.0) for n in range(20)]
    assert delays[0] <= 0.1 and delays == sorted(delays) and max(delays) == 1.0


def test_a_failed_move_never_loops():
    moved = Attempt(retries=1, moved=True)
    limits = Limits(1, 2.0, 1.0, NOW + 60, fallback_queue=True)
    decision = decide(seen(FAILED_NODE, FINISHED, on_fallback_queue=True), moved, limits)
    assert decision.rule == "build"


def _builds_until_final(retries: int, first: Decision) -> int:
    """Follow the policy through failing inline builds; count the builds it allows."""
    limits = Limits(retries, 0.0, 1.0, NOW + 60)
    failing = event(NodeState.FAILED, "error", resolved_by="fallback")
    decision, builds = first, 0
    while decision.action is not Action.FAIL:
        if decision.action is Action.BUILD:
            builds += 1
            decision = after_build(failing, decision.next, limits)
        else:  # a retry: the next message sees the failed record and a finished producer
            decision = decide(seen(failing, FINISHED), decision.next, limits)
    return builds


@pytest.mark.parametrize("retries", [1, 2, 3])
def test_inline_builds_after_a_repaired_upstream_are_exactly_retries(retries):
    # The bug issue 8 names: with retries >= 2 a repaired upstream allowed one build too many.
    limits = Limits(retries, 0.0, 1.0, NOW + 60)
    first = decide(seen(event(NodeState.UPSTREAM_FAILED, "skipped"), FINISHED), FIRST, limits)
    assert first.action is Action.BUILD
    assert _builds_until_final(retries, first) == retries


@pytest.mark.parametrize("retries", [0, 1, 2, 3])
def test_inline_builds_after_a_failure_are_exactly_retries(retries):
    limits = Limits(retries, 0.0, 1.0, NOW + 60)
    first = decide(seen(FAILED_NODE, FINISHED), FIRST, limits)
    assert _builds_until_final(retries, first) == retries


def test_after_a_build_passes_the_children_go():
    decision = after_build(event(NodeState.SUCCESS, "success", "fallback"), RETRIED, LIMITS)
    assert (decision.rule, decision.state, decision.next.builds) == ("built", NodeState.SUCCESS, 1)


def test_a_crash_is_an_error_outcome_that_says_what_broke():
    # The other bug issue 8 names: an unexpected exception left a consumer without an outcome.
    decision = on_crash(Attempt(polls=3), "consumer crashed: KeyError: 'spec'")
    assert (decision.action, decision.state, decision.error) == (Action.FAIL, NodeState.ERROR, ConsumerCrashed)
    assert "KeyError" in decision.reason


def test_every_rule_is_reachable_and_drawn_in_the_architecture_doc():
    reached = {case[4] for case in CASES} | {"built", "build_failed", "builds_spent", "crashed"}
    assert reached == {t.rule for t in TRANSITIONS}
    doc = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    block = re.search(r"```mermaid\n(stateDiagram-v2\n.*?)```", doc, re.S)
    assert block is not None and block.group(1).strip() == mermaid().strip(), "run: python -m dbt_celery.core.policy"
