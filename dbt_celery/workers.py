"""Local worker processes: ordinary ``celery -A dbt_celery worker`` commands, started and stopped.

Used by the embedded default (and by tests and benchmarks against Redis): a solo worker
for the producer and fallback queues (one dbt invocation at a time, dbt imported at
start-up) and a threads worker for the consumer queue (light tasks, no dbt).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Mapping

from dbt_celery.config import CONSUMER_QUEUE, FALLBACK_QUEUE, PRODUCER_QUEUE
from dbt_celery.errors import DbtCeleryError

#: Seconds a worker gets to finish its shutdown before it is killed.
SHUTDOWN_GRACE = 15.0
#: Threads of the consumer worker (consumers only poll the store; they never run dbt).
CONSUMER_THREADS = 8

ROLES: dict[str, tuple[list[str], list[str], bool]] = {
    # role: (queues, pool options, import dbt at start-up)
    "producer": ([PRODUCER_QUEUE, FALLBACK_QUEUE], ["-P", "solo"], True),
    "consumer": ([CONSUMER_QUEUE], ["-P", "threads", "-c", str(CONSUMER_THREADS)], False),
}


class WorkerDied(DbtCeleryError):
    """A local worker process exited while the run still needed it."""


class LocalWorkers:
    """A producer worker and a consumer worker as child processes, for a ``with`` block."""

    def __init__(self, env: Mapping[str, str], log_dir: Path) -> None:
        self.env = {**os.environ, **env}
        self.log_dir = log_dir
        self.session = uuid.uuid4().hex[:12]
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> "LocalWorkers":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for role in ROLES:
            self.start(role)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self, role: str) -> subprocess.Popen[bytes]:
        """Start (or start again) the worker of one role."""
        queues, pool, preload = ROLES[role]
        env = {**self.env, "DBT_CELERY_PRELOAD_DBT": "1" if preload else ""}
        command = [
            sys.executable, "-m", "celery", "-A", "dbt_celery", "worker",
            "-Q", ",".join(queues), *pool, "-n", f"{role}-{self.session}@%h",
            "--loglevel", "INFO", "-E", "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        with open(self.log_file(role), "ab") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes[role] = process
        return process

    def log_file(self, role: str) -> Path:
        """The log file of one worker."""
        return self.log_dir / f"{role}-{self.session}.log"

    def check(self) -> None:
        """Raise :class:`WorkerDied` if a worker exited, with the end of its log."""
        for role, process in self.processes.items():
            if process.poll() is not None:
                tail = self.log_file(role).read_text(errors="replace")[-2000:]
                raise WorkerDied(f"the {role} worker exited with code {process.returncode}:\n{tail}")

    def stop(self) -> None:
        """Warm shutdown (SIGTERM) for every worker; SIGKILL for those that linger."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(SHUTDOWN_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
