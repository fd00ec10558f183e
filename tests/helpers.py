"""Paths and small helpers shared by every test layer."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable, TypeVar

_T = TypeVar("_T")

REPO = Path(__file__).resolve().parents[1]
PROJECTS = Path(__file__).resolve().parent / "projects"
JAFFLE_SHOP = REPO / "examples" / "jaffle_shop"


def wait_for(
    read: Callable[[], _T | None],
    timeout: float,
    what: str,
    *,
    check: Callable[[], Any] | None = None,
    interval: float = 0.2,
    tolerate: tuple[type[BaseException], ...] = (),
    accept: Callable[[Any], bool] = bool,
) -> _T:
    """Call ``read`` until ``accept`` takes what it returns (by default: anything truthy); return that.

    Fails after ``timeout`` seconds. ``check`` runs before each read (e.g. raise if a process
    the test needs died); errors of the ``tolerate`` types (a server not listening yet) count
    as "not yet".
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        if check is not None:
            check()
        try:
            last = read()
            if accept(last):
                return last
        except tolerate as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}; last reading: {last!r}")
        time.sleep(interval)


def copy_project(name: str | Path, destination: Path) -> Path:
    """Copy a fixture project (tests/projects/<name>, or any path) into ``destination``, build output left behind."""
    source = Path(name) if Path(name).is_absolute() else PROJECTS / name
    target = destination / source.name
    ignored = shutil.ignore_patterns("target", "logs", "*.duckdb*", ".user.yml", "control")
    shutil.copytree(source, target, ignore=ignored)
    return target


class CeleryEvents:
    """Every Celery event the workers send while the block runs, as a list of dicts (a real event receiver)."""

    #: The event this receiver sends itself until it hears it: only then is its subscription live.
    PROBE = "dbt-celery-test-probe"

    def __init__(self, app):
        import threading

        self.app, self.events = app, []
        self._ready = threading.Event()
        self._heard: set[str] = set()
        self._thread = threading.Thread(target=self._receive, daemon=True)

    def __enter__(self):
        self._thread.start()
        assert self._ready.wait(10), "the event receiver did not start"
        self._wait_until_subscribed()
        return self

    def __exit__(self, *exc):
        self._receiver.should_stop = True
        self._thread.join(10)

    def _receive(self):
        with self.app.connection() as connection:
            self._receiver = receiver = self.app.events.Receiver(connection, handlers={"*": self._handle})
            receiver.on_consume_ready = lambda *args, **kwargs: self._ready.set()
            for _ in receiver.consume(limit=None, timeout=None, wakeup=False, safety_interval=0.2):
                pass

    def _handle(self, event: dict) -> None:
        if event.get("type") == self.PROBE:
            self._heard.add(event.get("marker"))
        else:
            self.events.append(event)

    def _wait_until_subscribed(self) -> None:
        # "Consume ready" comes before Redis has the subscription: an event sent in between is lost.
        marker, deadline = uuid.uuid4().hex, time.monotonic() + 10
        with self.app.events.default_dispatcher(enabled=True) as dispatcher:
            while marker not in self._heard:
                assert time.monotonic() < deadline, "the event receiver never heard its own probe"
                dispatcher.send(self.PROBE, marker=marker)
                time.sleep(0.05)

    def of(self, task_id: str, kind: str | None = None) -> list[dict]:
        """The events of one task (of one kind, e.g. ``task-started``)."""
        return [e for e in self.events if e.get("uuid") == task_id and (kind is None or e["type"] == kind)]
