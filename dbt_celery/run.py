"""Starting a run and following it from any process: :func:`submit` and :class:`DbtRun`.

``submit`` is cheap and imports no dbt, so a web request or a beat tick can call it:
it records the run, enqueues the producer on its own queue and returns a handle at
once. The producer plans the run on a worker (where dbt and the project live) and
enqueues the first consumers; the handle reads everything back from the result
backend, so ``DbtRun.restore(run_id)`` works from any other process.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from celery import Celery, current_app
from celery.result import AsyncResult, GroupResult

import dbt_celery.tasks  # noqa: F401 - registers the tasks submit sends
from dbt_celery.config import Queues
from dbt_celery.errors import ConfigurationError
from dbt_celery.events import PASSING_OUTCOMES, Outcome
from dbt_celery.plan import consumer_task_id, producer_task_id
from dbt_celery.spec import RunSpec
from dbt_celery.store import ProducerState, StatusStore

#: Node statuses that end a node; the others are "pending" and "reported".
FINAL_STATUSES = frozenset({*(outcome.value for outcome in Outcome)})


@dataclasses.dataclass(frozen=True)
class NodeStatus:
    """One node of a run as a user sees it."""

    unique_id: str
    name: str
    resource_type: str
    status: str
    dbt_status: str | None = None
    resolved_by: str | None = None
    reason: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    execution_time: float | None = None
    message: str | None = None

    @property
    def done(self) -> bool:
        """Whether the node reached a final status."""
        return self.status in FINAL_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """The node's entry in ``dbt-celery run --json``."""
        keys = ("status", "dbt_status", "resolved_by", "reason", "started_at", "finished_at", "message", "resource_type", "name")
        return {key: getattr(self, key) for key in keys}


@dataclasses.dataclass(frozen=True)
class RunStatus:
    """A snapshot of a whole run."""

    run_id: str
    state: str  # queued | planning | running | success | failed
    nodes: dict[str, NodeStatus]
    producer: ProducerState | None
    error: str | None = None

    @property
    def done(self) -> bool:
        """Whether the run has ended."""
        return self.state in ("success", "failed")

    def count(self, *statuses: str) -> int:
        """How many nodes are in any of ``statuses``."""
        return sum(1 for node in self.nodes.values() if node.status in statuses)

    def to_dict(self) -> dict[str, Any]:
        """The document ``dbt-celery run --json`` prints."""
        return {
            "run_id": self.run_id,
            "status": self.state if self.done else "running",
            "error": self.error,
            "nodes": {uid: node.to_dict() for uid, node in self.nodes.items()},
        }


class DbtRun:
    """A handle on one run, usable from any process that shares the result backend."""

    def __init__(self, run_id: str, app: Celery | None = None) -> None:
        self.id = run_id
        self.app = app or current_app
        self.store = StatusStore(self.app.backend)

    def __repr__(self) -> str:
        return f"<DbtRun {self.id}>"

    @classmethod
    def restore(cls, run_id: str, app: Celery | None = None) -> "DbtRun":
        """Find a run started elsewhere by its id."""
        run = cls(run_id, app)
        if run.store.document(run_id, "run") is None:
            raise ConfigurationError(f"no dbt-celery run {run_id} in this result backend")
        return run

    @property
    def producer_result(self) -> AsyncResult:
        """The Celery result of the run's producer task."""
        return AsyncResult(producer_task_id(self.id), app=self.app)

    def results(self) -> GroupResult | None:
        """The consumers' Celery results as one group (None until the run is planned)."""
        plan = self.store.document(self.id, "plan")
        if plan is None:
            return None
        children = [AsyncResult(consumer_task_id(self.id, uid), app=self.app) for uid in plan["nodes"]]
        return GroupResult(self.id, children, app=self.app)

    def status(self) -> RunStatus:
        """Read the run's state and every node's status now."""
        run = self.store.document(self.id, "run") or {}
        producer = self.store.producer_state(self.id)
        plan = self.store.document(self.id, "plan")
        spec = RunSpec.from_dict(run["spec"]) if "spec" in run else None
        if plan is None:
            state, error = _unplanned_state(producer, spec, run)
            return RunStatus(self.id, state, nodes={}, producer=producer, error=error)
        nodes = self._node_statuses(plan["nodes"])
        producer_done = producer is None or spec is None or producer.is_terminal(spec.heartbeat_timeout)
        if producer_done and all(node.done for node in nodes.values()):
            ok = all(node.status in PASSING_OUTCOMES for node in nodes.values())
            return RunStatus(self.id, "success" if ok else "failed", nodes, producer, _producer_error(producer))
        return RunStatus(self.id, "running", nodes, producer, None)

    def wait(
        self,
        timeout: float | None = None,
        *,
        interval: float = 0.25,
        on_update: Callable[[RunStatus], None] | None = None,
    ) -> RunStatus:
        """Block until the run ends (or ``timeout`` seconds pass: TimeoutError)."""
        deadline = time.monotonic() + timeout if timeout is not None else None
        while True:
            status = self.status()
            if on_update is not None:
                on_update(status)
            if status.done:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {self.id} still {status.state} after {timeout} s")
            time.sleep(interval)

    def _node_statuses(self, plan_nodes: dict[str, dict[str, Any]]) -> dict[str, NodeStatus]:
        outcomes = self.store.outcomes(self.id, plan_nodes)
        events = self.store.node_events(self.id, plan_nodes)
        fields = {f.name for f in dataclasses.fields(NodeStatus)}
        nodes = {}
        for uid, info in plan_nodes.items():
            base = {"unique_id": uid, "name": info["name"], "resource_type": info["resource_type"]}
            if uid in outcomes:
                outcome = {k: v for k, v in outcomes[uid].items() if k in fields}
                if outcome.get("dbt_status") is None and uid in events:
                    # A descendant failed by its upstream still shows what dbt said of it.
                    outcome["dbt_status"] = events[uid].dbt_status
                nodes[uid] = NodeStatus(**base, **outcome)
            elif uid in events:
                event = events[uid]
                nodes[uid] = NodeStatus(**base, status="reported", dbt_status=event.dbt_status, resolved_by=event.resolved_by, started_at=event.started_at, finished_at=event.finished_at, message=event.message)
            else:
                nodes[uid] = NodeStatus(**base, status="pending")
        return nodes


def _unplanned_state(producer: ProducerState | None, spec: RunSpec | None, run: dict[str, Any]) -> tuple[str, str | None]:
    if producer is None:
        return "failed", "no such run"
    if producer.state == ProducerState.FAILED:
        return "failed", producer.error
    if spec is not None and producer.is_dead(spec.heartbeat_timeout):
        return "failed", "the producer died before it planned the run"
    if run.get("deadline") and time.time() > run["deadline"]:
        return "failed", "the run timed out before a worker planned it"
    return ("queued" if producer.state == ProducerState.QUEUED else "planning"), None


def _producer_error(producer: ProducerState | None) -> str | None:
    return producer.error if producer is not None and producer.state == ProducerState.FAILED else None


def submit(spec: RunSpec, *, app: Celery | None = None) -> DbtRun:
    """Start a run: record it, enqueue its producer, and return its handle at once."""
    app = app or current_app
    if app.conf.task_always_eager:
        raise ConfigurationError(
            "dbt-celery cannot run in eager mode (task_always_eager): consumers reschedule themselves; "
            "run a real worker (the embedded default needs nothing started)"
        )
    store = StatusStore(app.backend)
    run_id = str(uuid.uuid4())
    now = time.time()
    store.put_document(run_id, "run", {"spec": spec.to_dict(), "submitted_at": now, "deadline": now + spec.timeout})
    store.put_producer_state(run_id, ProducerState(ProducerState.QUEUED, updated_at=now))
    app.tasks["dbt_celery.produce"].apply_async(
        kwargs={"run_id": run_id, "spec": spec.to_dict()},
        task_id=producer_task_id(run_id),
        queue=Queues.of(app).producer,
        shadow=f"dbt build {Path(spec.project_dir).name}",
    )
    return DbtRun(run_id, app)
