"""A whole run as users see it: every node's status and the run's state, read from the store.

:func:`summarize` is what ``DbtRun.status()``, ``dbt-celery status``, the overlap guard
and the watchdog all read, so they agree on when a run is over.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from dbt_celery.core.plan import plan_summary
from dbt_celery.core.policy import producer_gone
from dbt_celery.core.records import (
    FINAL_STATES,
    PASSING_STATES,
    NodeEvent,
    NodeOutcome,
    NodeState,
    ProducerPhase,
    ProducerState,
    utc_iso,
)
from dbt_celery.core.store import PRODUCER_LEASE, StatusStore

#: Seconds past a run's deadline after which it counts as over whatever its records say.
DEADLINE_GRACE = 120.0
#: Run states that end a run.
ENDED_RUN_STATES = frozenset({"success", "failed", "cancelled"})


@dataclasses.dataclass(frozen=True)
class NodeStatus:
    """One node of a run as a user sees it."""

    unique_id: str
    name: str
    resource_type: str
    status: NodeState
    dbt_status: str | None = None
    resolved_by: str | None = None
    reason: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    execution_time: float | None = None
    rows_affected: int | None = None
    message: str | None = None
    thread: str | None = None  # dbt's thread that built the node ("fallback" for an inline build)
    recorded_at: float | None = None  # when the consumer recorded the outcome (epoch seconds)

    @property
    def done(self) -> bool:
        """Whether the node reached a final status."""
        return self.status in FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        """The node's entry in ``dbt-celery run --json``."""
        data = dataclasses.asdict(self)
        data.pop("unique_id")
        data["status"] = self.status.value
        data["recorded_at"] = utc_iso(self.recorded_at)
        return data


@dataclasses.dataclass(frozen=True)
class RunStatus:
    """A snapshot of a whole run."""

    run_id: str
    state: str  # queued | waiting | planning | running | success | failed | cancelled
    nodes: dict[str, NodeStatus]
    producer: ProducerState | None
    error: str | None = None

    @property
    def bad_input(self) -> bool:
        """Whether the run failed on input the user must fix (a broken profile, a bad selector)."""
        return self.producer is not None and self.producer.bad_input

    @property
    def done(self) -> bool:
        """Whether the run has ended."""
        return self.state in ENDED_RUN_STATES

    def count(self, *statuses: NodeState | str) -> int:
        """How many nodes are in any of ``statuses``."""
        wanted = {NodeState(status) for status in statuses}
        return sum(1 for node in self.nodes.values() if node.status in wanted)

    def to_dict(self) -> dict[str, Any]:
        """The document ``dbt-celery run --json`` prints."""
        return {
            "run_id": self.run_id,
            "status": self.state,
            "error": self.error,
            "nodes": {uid: node.to_dict() for uid, node in self.nodes.items()},
        }


@dataclasses.dataclass
class SummaryCache:
    """What one observer already read of a run and will not change: the plan, and ended nodes.

    An outcome is written once (the first one wins) and dbt's record of a node once its
    outcome is there, so a watcher that keeps this between reads (``DbtRun.wait``) re-reads
    only the nodes still open: a big run's last minutes cost a few keys per read instead of
    every node's two.
    """

    planned: dict[str, dict[str, Any]] | None = None
    final: dict[str, NodeStatus] = dataclasses.field(default_factory=dict)
    #: The last read of the nodes not known for good yet.
    open: dict[str, NodeStatus] = dataclasses.field(default_factory=dict)


def summarize(
    store: StatusStore, run_id: str, now: float | None = None, cache: SummaryCache | None = None
) -> RunStatus:
    """Read a run's state and every node's status now (``cache``: reuse what a previous read found final)."""
    now = time.time() if now is None else now
    run = store.run(run_id)
    producer = store.producer(run_id)
    if run is None:
        return RunStatus(run_id, "failed", {}, producer, "no such run in this store")
    late = now > run.deadline + DEADLINE_GRACE
    planned = cache.planned if cache is not None and cache.planned is not None else plan_summary(store, run_id)
    if planned is None:
        state, error = _unplanned(producer, store.liveness(run_id, PRODUCER_LEASE).alive(now), now > run.deadline, late)
        return RunStatus(run_id, state, {}, producer, error)
    if cache is None:
        nodes = node_statuses(store, run_id, planned)
    else:
        cache.planned = planned
        nodes = _cached_statuses(store, run_id, planned, cache, producer is not None and producer.ended)
    alive = store.liveness(run_id, PRODUCER_LEASE).alive(now)
    finished = all(node.done for node in nodes.values()) and (
        producer is None or producer_gone(producer, alive) or producer.ended
    )
    if not finished and not late:
        return RunStatus(run_id, "running", nodes, producer)
    if not finished:
        return RunStatus(run_id, "failed", nodes, producer, "the run's timeout passed with nodes still open")
    if any(node.status is NodeState.CANCELLED for node in nodes.values()):
        return RunStatus(run_id, "cancelled", nodes, producer, store.cancelled(run_id))
    ok = all(node.status in PASSING_STATES for node in nodes.values())
    error = producer.error if producer is not None and producer.phase is ProducerPhase.FAILED else None
    return RunStatus(run_id, "success" if ok else "failed", nodes, producer, error)


def node_statuses(store: StatusStore, run_id: str, planned: dict[str, dict[str, Any]]) -> dict[str, NodeStatus]:
    """Every planned node's status from its outcome, else its dbt record, else pending."""
    outcomes = store.outcomes(run_id, planned)
    events = store.node_events(run_id, planned)
    return {uid: node_status(uid, info, events.get(uid), outcomes.get(uid)) for uid, info in planned.items()}


def node_status(uid: str, info: dict[str, Any], event: NodeEvent | None, outcome: NodeOutcome | None) -> NodeStatus:
    """One node's status from its outcome (what dbt said of it filling the gaps), else its record, else pending."""
    base = {"unique_id": uid, "name": info["name"], "resource_type": info["resource_type"]}
    if outcome is not None:
        return NodeStatus(
            **base,
            status=outcome.state,
            # A descendant failed by its upstream still shows what dbt said of it.
            dbt_status=outcome.dbt_status or (event.dbt_status if event else None),
            resolved_by=outcome.resolved_by,
            reason=outcome.reason,
            started_at=outcome.started_at,
            finished_at=outcome.finished_at,
            execution_time=outcome.execution_time,
            rows_affected=outcome.rows_affected,
            message=outcome.message,
            thread=outcome.thread or (event.thread if event else None),
            recorded_at=outcome.recorded_at,
        )
    if event is not None:
        return NodeStatus(
            **base,
            status=NodeState.REPORTED,
            dbt_status=event.dbt_status,
            resolved_by=event.resolved_by,
            started_at=event.started_at,
            finished_at=event.finished_at,
            execution_time=event.execution_time,
            rows_affected=event.rows_affected,
            message=event.message,
            thread=event.thread,
        )
    return NodeStatus(**base, status=NodeState.PENDING)


def _cached_statuses(
    store: StatusStore, run_id: str, planned: dict[str, dict[str, Any]], cache: SummaryCache, producer_ended: bool
) -> dict[str, NodeStatus]:
    """Node statuses, reading only nodes not yet known for good.

    A node is known for good once it has an outcome *and* dbt's record (or the producer has
    ended, so no record can come): an upstream failure's outcome is written before dbt's skip
    record lands, and the status shows what dbt said.
    """
    open_ids = [uid for uid in planned if uid not in cache.final]
    outcomes = store.outcomes(run_id, open_ids)
    events = store.node_events(run_id, open_ids)
    for uid in open_ids:
        event, outcome = events.get(uid), outcomes.get(uid)
        node = node_status(uid, planned[uid], event, outcome)
        if outcome is not None and (event is not None or producer_ended):
            cache.final[uid] = node
        else:
            cache.open[uid] = node
    return {uid: cache.final.get(uid) or cache.open[uid] for uid in planned}


def _unplanned(producer: ProducerState | None, alive: bool, overdue: bool, late: bool) -> tuple[str, str | None]:
    if producer is None:
        return "failed", "the run has no producer record"
    if producer.phase is ProducerPhase.CANCELLED:
        return "cancelled", producer.error or "cancelled before it was planned"
    if producer.phase is ProducerPhase.FAILED:
        return "failed", producer.error
    if producer.phase is ProducerPhase.FINISHED:
        return "failed", "the producer finished without a plan"
    # Nothing was built before planning: a run still queued at its deadline is over at once
    # (its producer, when it gets a worker, sees the deadline and builds nothing).
    if late or (overdue and producer.phase in (ProducerPhase.QUEUED, ProducerPhase.WAITING)):
        return "failed", f"the run's timeout passed while it was {producer.phase.value}"
    if producer.phase is ProducerPhase.PLANNING and not alive and producer_gone(producer, alive):
        return "failed", "the producer died before it planned the run"
    return producer.phase.value, None
