"""Local worker processes: ordinary ``celery -A dbt_celery worker`` commands, started and stopped.

Used by the embedded default (and by tests and benchmarks against Redis): a solo worker
for the producer and fallback queues (one dbt invocation at a time, dbt imported at
start-up) and a threads worker for the consumer and control queues (light tasks, no dbt).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, TypeVar

from dbt_celery.celery.queues import CONSUMER_QUEUE, CONTROL_QUEUE, FALLBACK_QUEUE, PRODUCER_QUEUE
from dbt_celery.errors import DbtCeleryError

#: Seconds a worker gets to finish its shutdown before it is killed.
SHUTDOWN_GRACE = 15.0
#: The grace once every run they served has ended: nothing they hold is needed any more, and a
#: worker on the embedded file broker takes ~4 s to notice a warm shutdown (its loop polls every 2 s).
IDLE_SHUTDOWN_GRACE = 0.3
#: Threads of the consumer worker (consumers only poll the store; they never run dbt).
CONSUMER_THREADS = 4

ROLES: dict[str, tuple[list[str], list[str], bool]] = {
    # role: (queues, pool options, import dbt at start-up)
    "producer": ([PRODUCER_QUEUE, FALLBACK_QUEUE], ["-P", "solo"], True),
    "consumer": ([CONSUMER_QUEUE, CONTROL_QUEUE], ["-P", "threads", "-c", str(CONSUMER_THREADS)], False),
}


_W = TypeVar("_W", bound="LocalWorkers")


class WorkerDied(DbtCeleryError):
    """A local worker process exited while the run still needed it."""


class LocalWorkers:
    """A producer worker and a consumer worker as child processes, for a ``with`` block.

    Subclasses may add queues to a role (``self.roles``), arguments to every worker
    (``self.extra_args``) or a working directory (``self.cwd``) before starting.
    """

    def __init__(self, env: Mapping[str, str], log_dir: Path) -> None:
        self.env = {**os.environ, **env}
        self.log_dir = log_dir
        self.session = uuid.uuid4().hex[:12]
        self.roles = {role: (list(queues), list(pool), preload) for role, (queues, pool, preload) in ROLES.items()}
        self.extra_args: list[str] = []
        self.cwd: Path | None = None
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        #: Seconds :meth:`stop` waits for a warm shutdown before it kills the workers.
        self.shutdown_grace = SHUTDOWN_GRACE

    def __enter__(self: _W) -> _W:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for role in self.roles:
                self.start(role)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def node_name(self, role: str) -> str:
        """The worker's node name (``-n``), as remote control addresses it."""
        return f"{role}-{self.session}@{socket.gethostname()}"

    def command(self, role: str) -> list[str]:
        """The ``celery worker`` command line of one role."""
        queues, pool, _ = self.roles[role]
        return [
            sys.executable, "-m", "celery", "-A", "dbt_celery", "worker",
            "-Q", ",".join(queues), *pool, "-n", self.node_name(role),
            "--loglevel", "INFO", "-E", "--without-gossip", "--without-mingle", *self.extra_args,
        ]  # fmt: skip

    def start(self, role: str) -> subprocess.Popen[bytes]:
        """Start (or start again) the worker of one role, in a process group of its own."""
        env = {**self.env, "DBT_CELERY_PRELOAD_DBT": "1" if self.roles[role][2] else ""}
        with open(self.log_file(role), "ab") as log:
            process = subprocess.Popen(
                self.command(role), cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
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
        """Warm shutdown (SIGTERM) for every worker; SIGKILL for the groups that linger."""
        for process in self.processes.values():
            if process.poll() is None:
                _signal_group(process, signal.SIGCONT)  # a paused worker cannot shut down
                _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_grace
        for process in self.processes.values():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # the worker and any dbt subprocess it started
    except ProcessLookupError:
        pass
