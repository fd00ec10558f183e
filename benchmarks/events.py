"""What the consumer workers really did, from Celery's own task events (the workers run with ``-E``).

A waiting consumer sends itself again under the same task id and ends the delivery with
``Ignore``; the producer wakes consumers whose records landed with one more message under
that id. Neither shows in the outcome's counters reliably, so the harness listens to the
workers' ``task-received`` (a message delivered to the worker, countdown copies included)
and ``task-started`` (an execution) events with a real event receiver, keeps them per
task id, and counts them per node over a run's window: from submit to ``wait()``
returning. An execution followed by no ``task-succeeded``/``-failed``/``-retried`` ended
with ``Ignore``: it found nothing to do yet (and sent itself again), or it was a stale copy
that found the outcome written. Executions after the window are the waiting copies that
were still on their countdown when the run ended; they run later, stale.
"""

from __future__ import annotations

import statistics
import threading
from typing import Any, Iterable, Mapping

from celery import Celery

RECEIVED, STARTED = "task-received", "task-started"
#: Events that end an execution with a result (an Ignore'd execution sends none: it waited, or was stale).
FINISHED = ("task-succeeded", "task-failed", "task-retried")
#: Seconds the receiver may take to connect.
START_TIMEOUT = 10.0

#: One task's events: (event type, worker timestamp), in arrival order.
Timeline = list[tuple[str, float]]


class EventLog:
    """A Celery event receiver in a thread, keeping every task-received/task-started per task id."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._by_id: dict[str, Timeline] = {}
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._receive, name="bench-events", daemon=True)
        self._tracked: list[tuple[dict[str, Any], list[str], float, float]] = []
        self.last_end = 0.0

    def __enter__(self) -> EventLog:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError(f"the Celery event receiver did not start within {START_TIMEOUT} s: {self._error!r}")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(START_TIMEOUT)

    def check(self) -> None:
        """Raise if the receiver stopped (its counts would be short)."""
        if not self._thread.is_alive():
            raise RuntimeError(f"the Celery event receiver stopped: {self._error!r}")

    def of(self, task_ids: Iterable[str]) -> dict[str, Timeline]:
        """A copy of the events of these task ids (an empty list for a task without any)."""
        with self._lock:
            return {task_id: list(self._by_id.get(task_id, ())) for task_id in task_ids}

    def measure(self, task_ids: list[str], start: float, end: float) -> dict[str, Any]:
        """Executions per node of one run's consumers in [start, end] (see :func:`execution_stats`).

        The dict returned is updated by :meth:`count_late` with the executions that came
        after the window (waiting copies whose countdown ran out after the run ended).
        """
        self.check()
        stats = execution_stats(count_in_window(self.of(task_ids), start, end))
        self._tracked.append((stats, task_ids, start, end))
        self.last_end = max(self.last_end, end)
        return stats

    def count_late(self) -> None:
        """Count, for every run measured so far, the executions after its window (call once they have run)."""
        for stats, task_ids, start, end in self._tracked:
            stats["late_executions"] = execution_stats(count_in_window(self.of(task_ids), start, end))[
                "late_executions"
            ]
            stats["late_counted"] = True

    def _record(self, event: Mapping[str, Any]) -> None:
        task_id = event.get("uuid")
        if task_id:
            with self._lock:
                self._by_id.setdefault(task_id, []).append((event["type"], float(event.get("timestamp") or 0)))

    def _receive(self) -> None:
        try:
            with self.app.connection() as connection:
                handlers = {kind: self._record for kind in (RECEIVED, STARTED, *FINISHED)}
                self._receiver = receiver = self.app.events.Receiver(connection, handlers=handlers)
                receiver.on_consume_ready = lambda *args, **kwargs: self._ready.set()
                for _ in receiver.consume(limit=None, timeout=None, wakeup=False, safety_interval=0.2):
                    pass
        except BaseException as exc:  # noqa: BLE001 - reported by check()
            self._error = exc
            raise


def count_in_window(timelines: Mapping[str, Timeline], start: float, end: float) -> dict[str, dict[str, int]]:
    """Per task id: its received and started events with a timestamp in [start, end], and started ones after end."""
    counts = {}
    for task_id, timeline in timelines.items():
        inside = [kind for kind, stamp in timeline if start <= stamp <= end]
        counts[task_id] = {
            "received": inside.count(RECEIVED),
            "started": inside.count(STARTED),
            "finished": sum(1 for kind in inside if kind in FINISHED),
            "started_after": sum(1 for kind, stamp in timeline if kind == STARTED and stamp > end),
        }
    return counts


def execution_stats(counts: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    """Mean/max executions and deliveries per node in the window, and the late executions, from count_in_window."""
    if not counts:
        return {"nodes": 0}
    started = [entry["started"] for entry in counts.values()]
    received = [entry["received"] for entry in counts.values()]
    ignored = [max(0, entry["started"] - entry.get("finished", entry["started"])) for entry in counts.values()]
    return {
        "nodes": len(counts),
        "executions_mean": statistics.fmean(started),
        "executions_max": max(started),
        "executions_min": min(started),
        "nodes_executed_more_than_once": sum(1 for value in started if value > 1),
        "ignored_mean": statistics.fmean(ignored),
        "deliveries_mean": statistics.fmean(received),
        "deliveries_max": max(received),
        "late_executions": sum(entry["started_after"] for entry in counts.values()),
    }
