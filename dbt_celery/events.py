"""The per-node record dbt-celery passes around, and the one table mapping dbt's statuses.

A :class:`NodeEvent` is what the producer learns about one node when dbt finishes it,
what the status store keeps, and what a consumer turns into its outcome. It is built
from dbt's ``NodeFinished`` event (in-process callback or ``--log-format json`` line,
both converted to the same dict) or, for nodes dbt never reported, from
``run_results.json``.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Mapping


class Outcome(str, enum.Enum):
    """What a node's dbt status means for its consumer."""

    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    UPSTREAM_FAILED = "upstream_failed"
    NOT_RUN = "not_run"


# The single mapping from dbt's raw statuses to outcomes. "skipped" is special:
# dbt build uses it both for plain skips and for "an upstream node failed"; the
# invocation tells them apart by the SkippingDetails event dbt emits for the latter.
DBT_STATUS_OUTCOMES: dict[str, Outcome] = {
    "success": Outcome.SUCCESS,  # model, seed, snapshot built
    "pass": Outcome.SUCCESS,  # test / unit test / freshness passed
    "warn": Outcome.SUCCESS,  # severity: warn - dbt build does not fail on it either
    "no-op": Outcome.SUCCESS,  # nothing to do (exposures, some materializations)
    "error": Outcome.FAILED,  # node raised (SQL error, compile error)
    "fail": Outcome.FAILED,  # test found failing rows
    "runtime error": Outcome.FAILED,  # freshness could not be checked
    "skipped": Outcome.SKIPPED,
}

#: Outcomes after which a node's children may proceed.
PASSING_OUTCOMES = frozenset({Outcome.SUCCESS, Outcome.SKIPPED})


def outcome_for(dbt_status: str | None, *, upstream_failed: bool = False) -> Outcome:
    """Map one raw dbt status to an outcome; unknown statuses count as failures."""
    if dbt_status is None:
        return Outcome.NOT_RUN
    outcome = DBT_STATUS_OUTCOMES.get(dbt_status, Outcome.FAILED)
    if outcome is Outcome.SKIPPED and upstream_failed:
        return Outcome.UPSTREAM_FAILED
    return outcome


@dataclasses.dataclass(frozen=True)
class NodeEvent:
    """The final word on one node from one dbt invocation."""

    unique_id: str
    resource_type: str
    dbt_status: str | None
    outcome: Outcome
    started_at: str | None = None
    finished_at: str | None = None
    execution_time: float | None = None
    message: str | None = None
    adapter_response: dict[str, Any] = dataclasses.field(default_factory=dict)
    failures: int | None = None
    resolved_by: str = "producer"

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form stored in the result backend."""
        data = dataclasses.asdict(self)
        data["outcome"] = self.outcome.value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NodeEvent":
        """Rebuild an event from :meth:`to_dict` output, ignoring unknown keys."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["outcome"] = Outcome(values["outcome"])
        return cls(**values)

    def replace(self, **changes: Any) -> "NodeEvent":
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def event_from_node_finished(data: Mapping[str, Any], *, upstream_failed: bool) -> NodeEvent:
    """Build a :class:`NodeEvent` from the ``data`` of a dbt ``NodeFinished`` event."""
    info = data.get("node_info") or {}
    result = data.get("run_result") or {}
    status = result.get("status") or None
    timing = result.get("timing_info") or []
    return NodeEvent(
        unique_id=info["unique_id"],
        resource_type=info.get("resource_type") or info["unique_id"].split(".", 1)[0],
        dbt_status=status,
        outcome=outcome_for(status, upstream_failed=upstream_failed),
        started_at=info.get("node_started_at") or (timing[0].get("started_at") if timing else None),
        finished_at=info.get("node_finished_at") or (timing[-1].get("completed_at") if timing else None),
        execution_time=result.get("execution_time"),
        message=result.get("message") or None,
        adapter_response=dict(result.get("adapter_response") or {}),
        failures=result.get("num_failures") if info.get("resource_type") in ("test", "unit_test") else None,
    )


def event_from_run_result(result: Mapping[str, Any], *, upstream_failed: bool = False) -> NodeEvent:
    """Build a :class:`NodeEvent` from one entry of ``run_results.json``."""
    unique_id = result["unique_id"]
    timing = result.get("timing") or []
    return NodeEvent(
        unique_id=unique_id,
        resource_type=unique_id.split(".", 1)[0],
        dbt_status=result.get("status"),
        outcome=outcome_for(result.get("status"), upstream_failed=upstream_failed),
        started_at=timing[0].get("started_at") if timing else None,
        finished_at=timing[-1].get("completed_at") if timing else None,
        execution_time=result.get("execution_time"),
        message=result.get("message"),
        adapter_response=dict(result.get("adapter_response") or {}),
        failures=result.get("failures"),
    )


def not_run_event(unique_id: str, reason: str) -> NodeEvent:
    """Record that dbt ended without ever reporting this node."""
    return NodeEvent(
        unique_id=unique_id,
        resource_type=unique_id.split(".", 1)[0],
        dbt_status=None,
        outcome=Outcome.NOT_RUN,
        message=reason,
    )
