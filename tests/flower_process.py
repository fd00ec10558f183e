"""A real Flower process (``celery -A dbt_celery flower``) on a free port, read through its HTTP API.

Used by tests/integrations/test_flower.py and docs/screenshots.py. Flower's API is left
open (``FLOWER_UNAUTHENTICATED_API``) and it listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

from tests.helpers import wait_for

#: Seconds Flower gets to come up and see the workers' heartbeats.
START_PATIENCE = 60.0

_T = TypeVar("_T")


class FlowerDied(RuntimeError):
    """The Flower process exited while it was needed."""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Flower:
    """``celery -A dbt_celery --broker URL flower`` as a child process, for a ``with`` block.

    Entering waits until Flower's event receiver has heard every worker in ``workers``
    (their heartbeats), so that tasks sent afterwards are all seen.
    """

    def __init__(self, broker_url: str, directory: Path, env: Mapping[str, str], workers: Iterable[str]) -> None:
        self.broker_url = broker_url
        self.directory = directory  # its cwd too: no flowerconfig.py of the repository is read
        self.env = {**os.environ, **env, "FLOWER_UNAUTHENTICATED_API": "true"}
        self.workers = set(workers)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = directory / "flower.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The command line Flower runs with."""
        return [
            sys.executable, "-m", "celery", "-A", "dbt_celery", "--broker", self.broker_url,
            "flower", "--address=127.0.0.1", f"--port={self.port}",
        ]  # fmt: skip

    def __enter__(self) -> Flower:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=self.directory, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            self.wait_for(self._hears_every_worker, START_PATIENCE, "Flower did not see the workers")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop Flower (SIGTERM, then SIGKILL if it lingers)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def check(self) -> None:
        """Raise :class:`FlowerDied` (with the end of its log) if Flower exited."""
        if self.process is not None and self.process.poll() is not None:
            tail = self.log_file.read_text(errors="replace")[-3000:]
            raise FlowerDied(f"Flower exited with code {self.process.returncode}:\n{tail}")

    def get(self, path: str, **query: Any) -> Any:
        """GET ``path`` of Flower's API and decode its JSON."""
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)

    def text(self, path: str) -> str:
        """GET ``path`` (a page, or ``/metrics``) as text."""
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as response:
            return str(response.read().decode())

    def tasks(self) -> dict[str, dict[str, Any]]:
        """Every task Flower knows, by task id (``/api/tasks``)."""
        return dict(self.get("/api/tasks"))

    def task(self, task_id: str) -> dict[str, Any]:
        """One task as Flower shows it (``/api/task/info/<id>``)."""
        return dict(self.get(f"/api/task/info/{task_id}"))

    def event_counts(self, event_type: str) -> dict[str, float]:
        """Flower's ``flower_events_total`` of one event type, by task name (its Prometheus ``/metrics``)."""
        counts: dict[str, float] = {}
        for line in self.text("/metrics").splitlines():
            if not line.startswith("flower_events_total{"):
                continue
            labels, _, value = line[len("flower_events_total{") :].rpartition("} ")
            fields = dict(_label(item) for item in _split_labels(labels))
            if fields.get("type") == event_type:
                name = fields.get("task", "")
                counts[name] = counts.get(name, 0.0) + float(value)
        return counts

    def wait_for(self, read: Callable[[], _T | None], timeout: float, what: str) -> _T:
        """Call ``read`` until it returns something; Flower not listening yet is "not yet"."""
        return wait_for(
            read, timeout, what, check=self.check, interval=0.3, tolerate=(OSError,), accept=lambda v: v is not None
        )

    def _hears_every_worker(self) -> bool | None:
        online = self.get("/api/workers", status="true")
        return True if all(online.get(worker) for worker in self.workers) else None


def _split_labels(labels: str) -> list[str]:
    """``a="x",b="y,z"`` into its items (commas inside quotes kept)."""
    items, current, quoted = [], "", False
    for char in labels:
        if char == '"' and not current.endswith("\\"):
            quoted = not quoted
        if char == "," and not quoted:
            items.append(current)
            current = ""
        else:
            current += char
    return [*items, current] if current else items


def _label(item: str) -> tuple[str, str]:
    key, _, value = item.partition("=")
    return key, value.strip('"')
