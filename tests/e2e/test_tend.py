"""The watchdog's round on a real Redis: lost consumers re-sent, stranded ones sent, nothing twice."""

from __future__ import annotations

import time
import uuid

from dbt_celery.celery.backends import store_for
from dbt_celery.celery.config import create_app, settings_from_env
from dbt_celery.celery.messages import WATCHDOG_SILENCE, revive_watchdog
from dbt_celery.celery.watchdog import tend, tend_while_building
from dbt_celery.core.plan import GraphNode, RunPlan
from dbt_celery.core.records import NodeOutcome, NodeState, ProducerPhase, ProducerState, RunDocument
from dbt_celery.core.spec import RunSpec
from dbt_celery.core.store import WATCHDOG


def test_a_round_sends_silent_and_stranded_consumers_once(worker_env, redis_client):
    queue = f"test-tend-{uuid.uuid4().hex[:8]}"  # a queue no worker reads: the messages stay countable
    app = create_app({**settings_from_env(worker_env), "dbt_celery_consumer_queue": queue})
    store = store_for(app)
    run_id = str(uuid.uuid4())
    spec = RunSpec(project_dir="/nowhere", rearm_after=1)
    now = time.time()
    store.put_run(run_id, RunDocument(spec.to_dict(), now, now + 600))
    store.put_producer(run_id, ProducerState(ProducerPhase.FINISHED, now))
    a = GraphNode("model.p.a", "model", "a", "fqn:p.a", children=("model.p.b", "model.p.c"))
    b = GraphNode("model.p.b", "model", "b", "fqn:p.b", parents=("model.p.a",))
    c = GraphNode("model.p.c", "model", "c", "fqn:p.c", parents=("model.p.a",))
    RunPlan(run_id, {n.unique_id: n for n in (a, b, c)}).save(store)
    # a passed, but its consumer broke before it released b and c; b was sent long ago and went silent.
    store.put_outcome(run_id, "model.p.a", NodeOutcome(NodeState.SUCCESS, "success"))
    store.claim(run_id, "enqueue_model.p.a")
    store.claim(run_id, "enqueue_model.p.b")
    store.mark_seen(
        run_id, "model.p.b", {"dbt_celery_attempt": {"polls": 3, "retries": 1, "builds": 0, "moved": False}}
    )

    time.sleep(1.5)  # b's last sign of life is now older than rearm_after
    tend(app, run_id, by_watchdog=True)
    tend(app, run_id, by_watchdog=True)  # a second round sends nothing more

    try:
        assert redis_client.llen(queue) == 2  # b again (it went silent) and c (stranded), once each
        assert store.claims(run_id, ["enqueue_model.p.c"])  # c is now sent, so never sent twice
    finally:
        redis_client.delete(queue)


def test_a_building_producer_counts_as_its_runs_watchdog(worker_env, redis_client):
    # The watchdog task queues behind a build on a solo producer worker: the producer's beat
    # marks the run tended, so a consumer noticing the watchdog's silence sends no new one.
    queue = f"test-tend-{uuid.uuid4().hex[:8]}"  # the producer queue here: no worker reads it
    app = create_app({**settings_from_env(worker_env), "dbt_celery_producer_queue": queue})
    store = store_for(app)
    run_id, spec, now = str(uuid.uuid4()), RunSpec(project_dir="/nowhere"), time.time()
    store.put_run(run_id, RunDocument(spec.to_dict(), now, now + 600))
    store.put_producer(run_id, ProducerState(ProducerPhase.FINISHED, now))
    silent_since = now - 2 * WATCHDOG_SILENCE
    store.mark_seen(run_id, WATCHDOG, {})
    try:
        revive_watchdog(app, store, run_id, spec, silent_since)  # silent for long: a new watchdog goes out
        assert redis_client.llen(queue) == 1
        tend_while_building(app, run_id)  # the producer's beat
        seen_at = store.seen(run_id, [WATCHDOG])[WATCHDOG]["at"]
        assert seen_at >= now
        revive_watchdog(app, store, run_id, spec, seen_at)  # what a consumer reads now: not silent
        assert redis_client.llen(queue) == 1
    finally:
        redis_client.delete(queue)
