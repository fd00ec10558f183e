"""The Celery glue: dbt-celery's tasks, their names, queues, retries and messages.

* ``dbt_celery.produce`` runs a run's single ``dbt build`` (:mod:`dbt_celery.producer`).
* ``dbt_celery.consume`` reflects one node: it polls by rescheduling itself (RETRY in
  Flower, never holding a worker slot), and counts polls and real retries in its own
  message headers so that polls never spend the retry budget.
* ``dbt_celery.start_run`` starts a run from a JSON spec (celery beat, ``send_task``).

Decisions come from :mod:`dbt_celery.waiting`; this module only carries them out.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Iterable

from celery import Task, shared_task
from celery.exceptions import Ignore
from celery.signals import worker_init

from dbt_celery.config import Queues
from dbt_celery.errors import ConfigurationError, NodeError, UpstreamFailed
from dbt_celery.events import PASSING_OUTCOMES, NodeEvent, Outcome
from dbt_celery.fallback import build_node
from dbt_celery.overlap import take_turn
from dbt_celery.plan import consumer_task_id, load_nodes
from dbt_celery.producer import DuplicateProducer, run_producer
from dbt_celery.project import GraphNode
from dbt_celery.spec import DEFAULT_POLL_MAX, RunSpec
from dbt_celery.store import TRANSIENT_BACKEND_ERRORS, StatusStore
from dbt_celery.waiting import Action, Attempt, Decision, Limits, after_fallback, decide, poll_countdown

log = logging.getLogger(__name__)

# Message headers a consumer keeps across its own reschedules (never shown in Flower).
POLLS_HEADER = "dbt_celery_polls"
RETRIES_HEADER = "dbt_celery_retries"
FALLBACK_HEADER = "dbt_celery_fallback"


#: Seconds between two checks of a producer waiting for an earlier run of its project.
TURN_POLL = 2.0


@shared_task(bind=True, name="dbt_celery.produce", acks_late=False, max_retries=None)
def produce(self: Task, run_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Plan a run and run its single dbt build, recording each node as dbt finishes it."""
    from dbt_celery.run import DbtRun

    store = StatusStore(self.app.backend)
    run_spec = RunSpec.from_dict(spec)
    if run_spec.exclusive:
        blocker = take_turn(store, run_id, run_spec, lambda other: DbtRun(other, self.app).status().done)
        if blocker is not None:
            log.info("run %s waits for run %s of the same project", run_id, blocker)
            raise self.retry(countdown=TURN_POLL)
    try:
        return run_producer(
            store,
            run_id,
            run_spec,
            lambda plan, ids: _enqueue(self.app, store, plan.run_id, [plan.nodes[i] for i in ids]),
        )
    except DuplicateProducer:
        raise Ignore()


@shared_task(bind=True, name="dbt_celery.start_run")
def start_run(self: Task, spec: dict[str, Any]) -> str:
    """Start a run from a JSON spec and return its run id (for beat and ``send_task``)."""
    from dbt_celery.run import submit

    return submit(RunSpec.from_dict(spec), app=self.app).id


@shared_task(
    bind=True,
    name="dbt_celery.consume",
    max_retries=None,  # polls and retries are counted in headers, not by Celery
    acks_late=True,
    reject_on_worker_lost=True,
    throws=(NodeError,),
)
def consume(self: Task, run_id: str, unique_id: str) -> dict[str, Any]:
    """Reflect one node's dbt result; wait, retry or build it inline as the policy says."""
    store = StatusStore(self.app.backend)
    headers = dict(self.request.headers or {})
    polls = int(headers.get(POLLS_HEADER, 0))
    try:
        event, producer, run = store.poll(run_id, unique_id)
    except TRANSIENT_BACKEND_ERRORS as exc:
        # A backend hiccup is not a node failure: poll again later.
        log.warning("run %s node %s: status store unavailable (%r); polling again", run_id, unique_id, exc)
        raise self.retry(countdown=poll_countdown(polls, DEFAULT_POLL_MAX), headers={**headers, POLLS_HEADER: polls + 1})
    if run is None:
        raise ConfigurationError(f"run {run_id} is unknown to this result backend (expired, or another backend)")
    spec = RunSpec.from_dict(run["spec"])
    attempt = Attempt(polls, int(headers.get(RETRIES_HEADER, 0)), run["deadline"])
    limits = _limits(spec)
    if headers.get(FALLBACK_HEADER):
        decision = Decision(Action.FALLBACK, reason="handed to the fallback queue")
    else:
        decision = decide(event, producer, attempt, limits, time.time())
    return _carry_out(self, store, run_id, unique_id, spec, decision, event, attempt, headers)


def _carry_out(
    task: Task,
    store: StatusStore,
    run_id: str,
    unique_id: str,
    spec: RunSpec,
    decision: Decision,
    event: NodeEvent | None,
    attempt: Attempt,
    headers: dict[str, Any],
) -> dict[str, Any]:
    queues = Queues.of(task.app)
    headers.pop(FALLBACK_HEADER, None)
    if decision.action is Action.WAIT:
        raise task.retry(countdown=decision.countdown, headers={**headers, POLLS_HEADER: attempt.polls + 1})
    if decision.action is Action.RETRY:
        assert decision.error is not None
        new_headers = {**headers, POLLS_HEADER: 0, RETRIES_HEADER: attempt.retries + 1}
        raise task.retry(
            countdown=decision.countdown, headers=new_headers, exc=decision.error(decision.reason), queue=queues.consumer
        )
    if decision.action is Action.FALLBACK:
        current = (task.request.delivery_info or {}).get("routing_key")
        if queues.fallback and current != queues.fallback:
            raise task.retry(countdown=0, headers={**headers, FALLBACK_HEADER: 1}, queue=queues.fallback)
        node = load_nodes(store, run_id, [unique_id])[unique_id]
        event = build_node(spec, run_id, node, attempt.retries)
        store.put_node_event(run_id, event)
        decision = after_fallback(event, attempt, _limits(spec))
        return _carry_out(task, store, run_id, unique_id, spec, decision, event, attempt, headers)
    outcome = _outcome(decision, event, attempt)
    store.put_outcome(run_id, unique_id, outcome)
    node = load_nodes(store, run_id, [unique_id])[unique_id]
    if decision.action is Action.SUCCEED:
        _release_children(task.app, store, run_id, node)
        return outcome
    _fail_descendants(task.app, store, run_id, node)
    assert decision.error is not None
    raise decision.error(f"{unique_id}: {outcome['message'] or decision.reason}")


def _limits(spec: RunSpec) -> Limits:
    return Limits(spec.retries, spec.retry_delay, spec.heartbeat_timeout, spec.poll_max)


def _outcome(decision: Decision, event: NodeEvent | None, attempt: Attempt) -> dict[str, Any]:
    """The consumer's final record of its node, as the run handle and --json show it."""
    if decision.action is Action.SUCCEED:
        assert event is not None
        status, reason = event.outcome.value, event.outcome.value
    else:
        assert decision.error is not None
        reason = decision.error.reason
        if decision.error is UpstreamFailed:
            status = Outcome.UPSTREAM_FAILED.value
        elif event is not None and event.outcome is Outcome.NOT_RUN:
            status = Outcome.NOT_RUN.value
        else:
            status = "failed"
    event_data = event.to_dict() if event is not None else {}
    return {
        "status": status,
        "reason": reason,
        "dbt_status": event_data.get("dbt_status"),
        "resolved_by": event_data.get("resolved_by"),
        "started_at": event_data.get("started_at"),
        "finished_at": event_data.get("finished_at"),
        "execution_time": event_data.get("execution_time"),
        "message": event_data.get("message") or (decision.reason if status != "success" else None),
        "polls": attempt.polls,
        "retries": attempt.retries,
        "consumer_finished_at": time.time(),
    }


def _release_children(app: Any, store: StatusStore, run_id: str, node: GraphNode) -> None:
    """Enqueue each child whose parents have all passed (exactly once, whoever gets there first)."""
    children = load_nodes(store, run_id, list(node.children))
    ready = []
    for child in children.values():
        outcomes = store.outcomes(run_id, child.parents)
        if len(outcomes) == len(child.parents) and all(o["status"] in PASSING_OUTCOMES for o in outcomes.values()):
            ready.append(child)
    _enqueue(app, store, run_id, ready)


def _fail_descendants(app: Any, store: StatusStore, run_id: str, node: GraphNode) -> None:
    """End every descendant of a failed node as upstream_failed, so nothing waits for it."""
    seen: set[str] = set()
    frontier = list(node.children)
    while frontier:
        entries = load_nodes(store, run_id, [uid for uid in frontier if uid not in seen])
        frontier = []
        for uid, child in entries.items():
            seen.add(uid)
            if not store.claim(run_id, f"enqueue_{uid}"):
                continue
            message = f"not built: upstream node {node.unique_id} failed"
            outcome = {"status": "upstream_failed", "reason": "upstream_failed", "message": message}
            store.put_outcome(run_id, uid, {**outcome, "consumer_finished_at": time.time()})
            app.backend.mark_as_failure(consumer_task_id(run_id, uid), UpstreamFailed(message))
            frontier.extend(child.children)


def _enqueue(app: Any, store: StatusStore, run_id: str, nodes: Iterable[GraphNode]) -> None:
    """Send the consumer of each node that nobody has sent yet."""
    queue = Queues.of(app).consumer
    consume_task = app.tasks["dbt_celery.consume"]
    for node in nodes:
        if store.claim(run_id, f"enqueue_{node.unique_id}"):
            consume_task.apply_async(
                kwargs={"run_id": run_id, "unique_id": node.unique_id},
                task_id=consumer_task_id(run_id, node.unique_id),
                queue=queue,
                shadow=f"dbt {node.resource_type} {node.name}",
            )



@worker_init.connect
def _preload_dbt(**_: Any) -> None:
    """Import dbt while a producer worker boots, so the first build starts warm."""
    if os.environ.get("DBT_CELERY_PRELOAD_DBT"):
        import dbt.cli.main  # noqa: F401
