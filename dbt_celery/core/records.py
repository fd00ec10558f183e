"""Every record dbt-celery keeps, as frozen dataclasses, and the one table of dbt statuses.

* :class:`NodeState` — where a node stands, as users see it (a ``str`` enum).
* :class:`NodeEvent` — dbt's final word on one node from one invocation (producer or fallback).
* :class:`NodeOutcome` — a consumer's final record of its node.
* :class:`ProducerState` and :class:`Lease` — what the producer is doing, and who may write.
* :class:`RunDocument` — what was submitted: the spec and the deadline.

The status store reads and writes these types only; ``to_dict``/``from_dict`` are the
JSON forms, and a value that does not fit raises :class:`~dbt_celery.errors.PayloadError`.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from typing import Any, Mapping, TypeVar

from dbt_celery.errors import PayloadError


class NodeState(str, enum.Enum):
    """Where one node of a run stands."""

    PENDING = "pending"  # nothing known yet
    REPORTED = "reported"  # dbt reported it; its consumer has not finished
    SUCCESS = "success"
    SKIPPED = "skipped"
    FAILED = "failed"
    UPSTREAM_FAILED = "upstream_failed"
    NOT_RUN = "not_run"
    ERROR = "error"  # the consumer itself broke (not dbt)
    CANCELLED = "cancelled"


#: States after which a node's children may proceed.
PASSING_STATES = frozenset({NodeState.SUCCESS, NodeState.SKIPPED})
#: States that end a node.
FINAL_STATES = frozenset(NodeState) - {NodeState.PENDING, NodeState.REPORTED}

# The single mapping from dbt's raw statuses to node states. "skipped" is special:
# dbt build uses it both for plain skips and for "an upstream node failed"; the
# invocation tells them apart by the SkippingDetails event dbt emits for the latter.
DBT_STATUS_STATES: dict[str, NodeState] = {
    "success": NodeState.SUCCESS,  # model, seed, snapshot built
    "pass": NodeState.SUCCESS,  # test / unit test / freshness passed
    "warn": NodeState.SUCCESS,  # severity: warn - dbt build does not fail on it either
    "no-op": NodeState.SUCCESS,  # nothing to do (exposures, some materializations)
    "error": NodeState.FAILED,  # node raised (SQL error, compile error)
    "fail": NodeState.FAILED,  # test found failing rows
    "partial success": NodeState.FAILED,  # microbatch model, some batches failed: dbt skips what depends on it
    "runtime error": NodeState.FAILED,  # freshness could not be checked
    "skipped": NodeState.SKIPPED,
}


def state_for(dbt_status: str | None, *, upstream_failed: bool = False) -> NodeState:
    """Map one raw dbt status to a node state; unknown statuses count as failures."""
    if dbt_status is None:
        return NodeState.NOT_RUN
    state = DBT_STATUS_STATES.get(dbt_status, NodeState.FAILED)
    if state is NodeState.SKIPPED and upstream_failed:
        return NodeState.UPSTREAM_FAILED
    return state


_R = TypeVar("_R", bound="_Record")


class _Record:
    """JSON round trip shared by every record: enums by value, unknown keys ignored."""

    _ENUMS: dict[str, type[enum.Enum]] = {}

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form."""
        data = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {key: value.value if isinstance(value, enum.Enum) else value for key, value in data.items()}

    @classmethod
    def from_dict(cls: type[_R], data: Mapping[str, Any]) -> _R:
        """Rebuild a record from :meth:`to_dict` output; a value that does not fit is a PayloadError."""
        fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        values = {key: value for key, value in data.items() if key in fields}
        try:
            for key, kind in cls._ENUMS.items():
                if key in values:
                    values[key] = kind(values[key])
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"stored value is not a {cls.__name__}: {exc}") from None

    def replace(self: _R, **changes: Any) -> _R:
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclasses.dataclass(frozen=True)
class NodeEvent(_Record):
    """The final word on one node from one dbt invocation."""

    unique_id: str
    resource_type: str
    dbt_status: str | None
    outcome: NodeState
    started_at: str | None = None
    finished_at: str | None = None
    execution_time: float | None = None
    message: str | None = None
    adapter_response: dict[str, Any] = dataclasses.field(default_factory=dict)
    failures: int | None = None
    resolved_by: str = "producer"
    thread: str | None = None  # dbt's thread name ("Thread-1 (worker)"), "fallback" for an inline build

    _ENUMS = {"outcome": NodeState}

    @property
    def rows_affected(self) -> int | None:
        """Rows dbt's adapter reported for the node, when it did."""
        rows = self.adapter_response.get("rows_affected")
        if isinstance(rows, float) and rows.is_integer():
            rows = int(rows)  # dbt's events carry adapter_response as a protobuf Struct: every number a double
        return rows if isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0 else None


def utc_iso(value: str | float | None) -> str | None:
    """A timestamp as ISO 8601 with its time zone (dbt writes UTC without saying so; floats are epoch seconds)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return datetime.datetime.fromtimestamp(value, datetime.timezone.utc).isoformat()
    moment = _moment(value)
    return moment.isoformat() if moment is not None else value


def epoch_seconds(value: str | None) -> float | None:
    """Epoch seconds of an ISO timestamp (a naive one is UTC, as dbt writes them); None if there is none."""
    moment = _moment(value) if value else None
    return moment.timestamp() if moment is not None else None


def _moment(value: str) -> datetime.datetime | None:
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.timezone.utc)


def not_run_event(unique_id: str, reason: str, *, upstream_failed: bool = False) -> NodeEvent:
    """Record that dbt ended without ever running this node."""
    state = NodeState.UPSTREAM_FAILED if upstream_failed else NodeState.NOT_RUN
    return NodeEvent(unique_id, unique_id.split(".", 1)[0], None, state, message=reason)


@dataclasses.dataclass(frozen=True)
class NodeOutcome(_Record):
    """A consumer's final record of its node, as the run handle and ``--json`` show it."""

    state: NodeState
    reason: str
    message: str | None = None
    dbt_status: str | None = None
    resolved_by: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    execution_time: float | None = None
    rows_affected: int | None = None
    polls: int = 0
    retries: int = 0
    builds: int = 0
    recorded_at: float | None = None
    thread: str | None = None

    _ENUMS = {"state": NodeState}

    @classmethod
    def of(cls, state: NodeState, reason: str, event: NodeEvent | None, **fields: Any) -> NodeOutcome:
        """An outcome carrying what dbt said of the node (when it said anything)."""
        if event is not None:
            fields = {
                "dbt_status": event.dbt_status,
                "resolved_by": event.resolved_by,
                "started_at": event.started_at,
                "finished_at": event.finished_at,
                "execution_time": event.execution_time,
                "rows_affected": event.rows_affected,
                "message": event.message,
                "thread": event.thread,
                **fields,
            }
        return cls(state, reason, **fields)


class ProducerPhase(str, enum.Enum):
    """What a run's producer is doing."""

    QUEUED = "queued"  # submitted, no worker has it yet
    WAITING = "waiting"  # waiting for an earlier run of the same target to end
    PLANNING = "planning"  # parsing the project and resolving the selection
    RUNNING = "running"  # dbt build under way
    FINISHED = "finished"  # dbt returned (nodes may have failed)
    FAILED = "failed"  # dbt could not run, or the producer broke
    CANCELLED = "cancelled"  # stopped on request or at the run's deadline


#: Phases in which the producer holds a lease and may still write.
ACTIVE_PHASES = frozenset({ProducerPhase.PLANNING, ProducerPhase.RUNNING})
#: Phases after which the producer writes nothing more.
ENDED_PHASES = frozenset({ProducerPhase.FINISHED, ProducerPhase.FAILED, ProducerPhase.CANCELLED})


@dataclasses.dataclass(frozen=True)
class Lease(_Record):
    """The right to write a run's (or one build's) records: one holder per generation.

    ``renewed_at`` lives in a key of its own so the lease value stays the same while its
    holder renews it; every fenced write compares that value.
    """

    generation: int
    holder: str
    ttl: float
    done: bool = False


@dataclasses.dataclass(frozen=True)
class ProducerState(_Record):
    """What the producer of a run is doing, and the lease generation it works under."""

    phase: ProducerPhase
    updated_at: float
    generation: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    dbt_success: bool | None = None
    error: str | None = None
    bad_input: bool = False  # the error is the user's to fix (profile, selector, project)
    done: int = 0
    total: int = 0

    _ENUMS = {"phase": ProducerPhase}

    @property
    def ended(self) -> bool:
        """Whether the producer has stopped for good on its own account."""
        return self.phase in ENDED_PHASES


@dataclasses.dataclass(frozen=True)
class Liveness:
    """A lease together with its last renewal: whether its holder still counts as alive."""

    lease: Lease | None
    renewed_at: float | None

    def alive(self, now: float) -> bool:
        """Whether the holder renewed within its lease's ttl."""
        if self.lease is None or self.lease.done or self.renewed_at is None:
            return False
        return now - self.renewed_at <= self.lease.ttl


@dataclasses.dataclass(frozen=True)
class RunDocument(_Record):
    """What was submitted: the spec (as JSON) and when the run must be over."""

    spec: dict[str, Any]
    submitted_at: float
    deadline: float
    overlap: str = "queue"
