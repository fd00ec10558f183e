"""dbt's events and artifacts turned into :class:`~dbt_celery.core.records.NodeEvent` records.

The producer and inline builds learn a node's result from dbt's ``NodeFinished`` event
(in-process callback or ``--log-format json`` line, both as the same dict) or, for
nodes dbt never reported, from ``run_results.json``. The status to trust is
``NodeFinished.data.run_result.status``; a skip counts as "upstream failed" when a
``SkippingDetails`` / ``LogSkipBecauseError`` event named the node first. A microbatch
model fires a ``NodeFinished`` for each of its batches before its own: those are not the
node's result (a ``LogBatchResult`` precedes each one) and are dropped.
"""

from __future__ import annotations

from typing import Any, Mapping

from dbt_celery.core.records import NodeEvent, state_for, utc_iso

#: dbt events the stream is built from; every other event is dropped unread.
STREAM_EVENTS = frozenset({"NodeFinished", "SkippingDetails", "LogSkipBecauseError", "LogBatchResult"})
# Events that mean "this node is skipped because something upstream failed".
_UPSTREAM_SKIP_EVENTS = frozenset({"SkippingDetails", "LogSkipBecauseError"})
# dbt's message on a node skipped because an ephemeral model it inlines failed.
_EPHEMERAL_SKIP = "caused by compilation error in referenced ephemeral model"


class NodeEventParser:
    """Turn dbt's events (as dicts) into :class:`NodeEvent` records, one per finished node."""

    def __init__(self) -> None:
        self._upstream_skipped: set[str] = set()
        # Batches of a microbatch model whose result line came but whose NodeFinished did not yet.
        self._batches_pending: dict[str, int] = {}

    def feed(self, name: str, data: Mapping[str, Any]) -> NodeEvent | None:
        """Take one event; return a record when it is a node's final event."""
        unique_id = (data.get("node_info") or {}).get("unique_id")
        if not unique_id:
            return None
        if name in _UPSTREAM_SKIP_EVENTS:
            self._upstream_skipped.add(unique_id)
            return None
        if name == "LogBatchResult":
            self._batches_pending[unique_id] = self._batches_pending.get(unique_id, 0) + 1
            return None
        if name == "NodeFinished":
            if self._batches_pending.get(unique_id):
                # One batch's status ("success" for the first while a later one fails), not the model's.
                self._batches_pending[unique_id] -= 1
                return None
            result = data.get("run_result") or {}
            # An "ERROR SKIP" (a failed ephemeral parent) fires LogSkipBecauseError without
            # node_info; dbt's message on the skipped node is the only trace of it.
            if result.get("status") == "skipped" and _EPHEMERAL_SKIP in (result.get("message") or ""):
                self._upstream_skipped.add(unique_id)
            return event_from_node_finished(data, upstream_failed=unique_id in self._upstream_skipped)
        return None


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
        outcome=state_for(status, upstream_failed=upstream_failed),
        started_at=utc_iso(info.get("node_started_at") or (timing[0].get("started_at") if timing else None)),
        finished_at=utc_iso(info.get("node_finished_at") or (timing[-1].get("completed_at") if timing else None)),
        execution_time=result.get("execution_time"),
        message=result.get("message") or None,
        adapter_response=dict(result.get("adapter_response") or {}),
        failures=result.get("num_failures") if info.get("resource_type") in ("test", "unit_test") else None,
        thread=result.get("thread") or None,
    )


def event_from_run_result(result: Mapping[str, Any], *, upstream_failed: bool = False) -> NodeEvent:
    """Build a :class:`NodeEvent` from one entry of ``run_results.json``."""
    unique_id = result["unique_id"]
    timing = result.get("timing") or []
    return NodeEvent(
        unique_id=unique_id,
        resource_type=unique_id.split(".", 1)[0],
        dbt_status=result.get("status"),
        outcome=state_for(result.get("status"), upstream_failed=upstream_failed),
        started_at=utc_iso(timing[0].get("started_at") if timing else None),
        finished_at=utc_iso(timing[-1].get("completed_at") if timing else None),
        execution_time=result.get("execution_time"),
        message=result.get("message"),
        adapter_response=dict(result.get("adapter_response") or {}),
        failures=result.get("failures"),
        thread=result.get("thread_id") or None,
    )
