"""The benchmark's own Celery worker processes on a Redis database, started and always stopped.

Two ``celery -A dbt_celery worker`` processes, as the production setup has them:

* producer: ``-Q dbt_celery.producer,dbt_celery.fallback,bench.naive -P solo`` with
  ``DBT_CELERY_PRELOAD_DBT=1`` (dbt imported at start-up); it also runs the naive
  baseline's tasks, so both approaches use the same worker;
* consumer: ``-Q dbt_celery.consumer -P threads -c 8``.

Each runs in its own process group; :meth:`Workers.stop` ends them (SIGTERM, then
SIGKILL) and is also registered with :mod:`atexit`, so no worker outlives the harness.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from celery import Celery

from benchmarks.naive import NAIVE_QUEUE
from dbt_celery.config import CONSUMER_QUEUE, FALLBACK_QUEUE, PRODUCER_QUEUE

REPO = Path(__file__).resolve().parents[1]
#: Seconds a worker may take to answer its first ping.
START_TIMEOUT = 90.0
#: Seconds a worker gets to shut down warm before it is killed.
STOP_GRACE = 10.0
CONSUMER_THREADS = 8


@dataclasses.dataclass(frozen=True)
class Role:
    """How one worker is started."""

    name: str
    queues: tuple[str, ...]
    pool: tuple[str, ...]
    preload_dbt: bool


ROLES = (
    Role("producer", (PRODUCER_QUEUE, FALLBACK_QUEUE, NAIVE_QUEUE), ("-P", "solo"), True),
    Role("consumer", (CONSUMER_QUEUE,), ("-P", "threads", "-c", str(CONSUMER_THREADS)), False),
)


class WorkerError(RuntimeError):
    """A benchmark worker did not start, or died."""


class Workers:
    """The producer and consumer workers of a benchmark session."""

    def __init__(self, app: Celery, env: dict[str, str], log_dir: Path) -> None:
        self.app = app
        self.env = env
        self.log_dir = log_dir
        self.session = uuid.uuid4().hex[:8]
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.commands: dict[str, list[str]] = {}

    def __enter__(self) -> "Workers":
        atexit.register(self.stop)
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def node_name(self, role: str) -> str:
        """The worker's node name (``-n``), as remote control addresses it."""
        return f"{role}-{self.session}@{os.uname().nodename}"

    def log_file(self, role: str) -> Path:
        """Where the worker's output goes."""
        return self.log_dir / f"{role}-{self.session}.log"

    def start(self) -> None:
        """Start both workers and wait until each answers a ping."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for role in ROLES:
            env = {**os.environ, **self.env, "PYTHONPATH": str(REPO)}
            env.pop("DBT_CELERY_PRELOAD_DBT", None)
            if role.preload_dbt:
                env["DBT_CELERY_PRELOAD_DBT"] = "1"
            command = [
                sys.executable, "-m", "celery", "-A", "dbt_celery", "worker",
                "-Q", ",".join(role.queues), *role.pool, "-n", self.node_name(role.name),
                "--loglevel", "INFO", "--without-gossip", "--without-mingle",
                "--include", "benchmarks.naive",
            ]  # fmt: skip
            self.commands[role.name] = command
            with open(self.log_file(role.name), "ab") as log:
                self.processes[role.name] = subprocess.Popen(
                    command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
        self.wait_ready()

    def wait_ready(self) -> None:
        """Block until every worker answers a ping (or raise :class:`WorkerError`)."""
        waiting = {self.node_name(role.name) for role in ROLES}
        deadline = time.monotonic() + START_TIMEOUT
        while waiting:
            self.check()
            if time.monotonic() > deadline:
                raise WorkerError(f"workers {sorted(waiting)} did not answer within {START_TIMEOUT} s")
            for reply in self.app.control.ping(destination=sorted(waiting), timeout=1.0):
                waiting -= set(reply)

    def check(self) -> None:
        """Raise :class:`WorkerError` if a worker exited, with the end of its log."""
        for role, process in self.processes.items():
            if process.poll() is not None:
                tail = self.log_file(role).read_text(errors="replace")[-3000:]
                raise WorkerError(f"the {role} worker exited with code {process.returncode}:\n{tail}")

    def pid(self, role: str) -> int:
        """The process id of a worker (solo and threads pools run tasks in it)."""
        return self.processes[role].pid

    def probe(self, role: str) -> dict[str, Any]:
        """Ask a worker what it holds (see :func:`benchmarks.naive.bench_probe`)."""
        name = self.node_name(role)
        for reply in self.app.control.broadcast("bench_probe", destination=[name], reply=True, timeout=5.0):
            if name in reply:
                return reply[name]
        raise WorkerError(f"worker {name} did not answer the probe")

    def cpu_seconds(self) -> dict[str, float]:
        """User+system CPU seconds each worker has used so far."""
        return {role: process_cpu_seconds(process.pid) for role, process in self.processes.items()}

    def stop(self) -> None:
        """SIGTERM each worker's process group, SIGKILL what is left after the grace period."""
        for process in self.processes.values():
            if process.poll() is None:
                _signal_group(process, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # the worker and any dbt it started
    except ProcessLookupError:
        pass


def process_cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of one process (and its reaped children), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def process_rss_bytes(pid: int) -> int:
    """Resident memory of one process, from /proc."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
