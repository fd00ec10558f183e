"""The consumer's policy, branch by branch (pure: no Celery, no dbt)."""

from __future__ import annotations

import pytest

from dbt_celery.errors import NodeFailed, ProducerFailed, UpstreamFailed, WaitTimedOut
from dbt_celery.events import NodeEvent, Outcome
from dbt_celery.store import ProducerState
from dbt_celery.waiting import Action, Attempt, Limits, after_fallback, decide, poll_countdown

NOW = 1_000_000.0
LIMITS = Limits(retries=1, retry_delay=2.0, heartbeat_timeout=30.0, poll_max=1.0)
FIRST = Attempt(polls=0, retries=0, deadline=NOW + 3600)
RETRIED = Attempt(polls=0, retries=1, deadline=NOW + 3600)


def producer(state: str, beat_age: float = 0.0) -> ProducerState:
    return ProducerState(state, updated_at=NOW - beat_age, heartbeat_at=NOW - beat_age)


def event(outcome: Outcome, status: str = "x", resolved_by: str = "producer") -> NodeEvent:
    return NodeEvent("model.p.a", "model", status, outcome, resolved_by=resolved_by)


RUNNING, FINISHED, DEAD = producer("running"), producer("finished"), producer("running", beat_age=31)


@pytest.mark.parametrize(
    "node, prod, attempt, action, error",
    [
        # nothing yet: wait while the producer lives, even on a retry (never race it)
        (None, producer("queued"), FIRST, Action.WAIT, None),
        (None, RUNNING, FIRST, Action.WAIT, None),
        (None, RUNNING, RETRIED, Action.WAIT, None),
        # passing records end the consumer at once
        (event(Outcome.SUCCESS, "success"), RUNNING, FIRST, Action.SUCCEED, None),
        (event(Outcome.SKIPPED, "skipped"), RUNNING, FIRST, Action.SUCCEED, None),
        # a failure with a retry left is a genuine retry, not a failure
        (event(Outcome.FAILED, "error"), RUNNING, FIRST, Action.RETRY, NodeFailed),
        # on the retry: wait until the producer is done, then build inline
        (event(Outcome.FAILED, "error"), RUNNING, RETRIED, Action.WAIT, None),
        (event(Outcome.FAILED, "error"), FINISHED, RETRIED, Action.FALLBACK, None),
        # a dead producer (stale heartbeat) is terminal: retry, then fall back
        (None, DEAD, FIRST, Action.RETRY, ProducerFailed),
        (None, DEAD, RETRIED, Action.FALLBACK, None),
        (event(Outcome.NOT_RUN), FINISHED, FIRST, Action.RETRY, ProducerFailed),
        # skipped because upstream failed, upstream since repaired: build once dbt is done
        (event(Outcome.UPSTREAM_FAILED, "skipped"), RUNNING, FIRST, Action.WAIT, None),
        (event(Outcome.UPSTREAM_FAILED, "skipped"), FINISHED, FIRST, Action.FALLBACK, None),
    ],
)
def test_decisions(node, prod, attempt, action, error):
    decision = decide(node, prod, attempt, LIMITS, NOW)
    assert decision.action is action
    assert decision.error is error


def test_without_retries_a_failure_is_final_and_says_which():
    no_retries = Limits(0, 0.0, 30.0, 1.0)
    assert decide(event(Outcome.FAILED, "error"), RUNNING, FIRST, no_retries, NOW).error is NodeFailed
    assert decide(None, DEAD, FIRST, no_retries, NOW).error is ProducerFailed


def test_without_retries_an_upstream_skip_stands():
    # No parent was rebuilt, so what failed lies outside the plan (an ephemeral model).
    no_retries = Limits(0, 0.0, 30.0, 1.0)
    decision = decide(event(Outcome.UPSTREAM_FAILED, "skipped"), FINISHED, FIRST, no_retries, NOW)
    assert (decision.action, decision.error) == (Action.FAIL, UpstreamFailed)


def test_the_deadline_ends_a_wait():
    late = Attempt(polls=500, retries=0, deadline=NOW - 1)
    decision = decide(None, RUNNING, late, LIMITS, NOW)
    assert (decision.action, decision.error) == (Action.FAIL, WaitTimedOut)


def test_polls_back_off_to_the_cap():
    delays = [poll_countdown(n, 1.0) for n in range(20)]
    assert delays[0] <= 0.1
    assert delays == sorted(delays)
    assert max(delays) == 1.0


def test_after_a_fallback_the_retry_budget_decides():
    failed = event(Outcome.FAILED, "error", resolved_by="fallback")
    assert after_fallback(failed, RETRIED, LIMITS).action is Action.FAIL
    assert after_fallback(failed, RETRIED, Limits(2, 0.0, 30.0, 1.0)).action is Action.RETRY
    assert after_fallback(event(Outcome.SUCCESS, "success", "fallback"), RETRIED, LIMITS).action is Action.SUCCEED
    # A fallback after a repaired upstream came without a retry, but still spent one.
    assert after_fallback(failed, FIRST, LIMITS).action is Action.FAIL
