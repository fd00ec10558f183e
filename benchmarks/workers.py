"""The benchmark's own Celery worker processes on a Redis database, started and always stopped.

Two ``celery -A dbt_celery worker`` processes, as the production setup has them:

* producer: ``-Q dbt_celery.producer,dbt_celery.fallback,bench.naive -P solo`` with
  ``DBT_CELERY_PRELOAD_DBT=1`` (dbt imported at start-up); it also runs the naive
  baseline's tasks, so both approaches use the same worker;
* consumer: ``-Q dbt_celery.consumer -P threads -c 4``.

Each runs in its own process group; :meth:`Workers.stop` ends them (SIGTERM, then
SIGKILL) and is also registered with :mod:`atexit`, so no worker outlives the harness.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any, Iterator

from celery import Celery

from benchmarks.naive import NAIVE_QUEUE
from dbt_celery.celery.workers import LocalWorkers

REPO = Path(__file__).resolve().parents[1]
#: Seconds a worker may take to answer its first ping.
START_TIMEOUT = 90.0


class WorkerError(RuntimeError):
    """A benchmark worker did not start, or died."""


class Workers(LocalWorkers):
    """The library's local workers, plus the naive baseline's queue and a few probes."""

    def __init__(self, app: Celery, env: dict[str, str], log_dir: Path) -> None:
        super().__init__(env, log_dir)
        self.app = app
        self.roles["producer"][0].append(NAIVE_QUEUE)
        self.extra_args = ["--include", "benchmarks.naive"]
        self.cwd = REPO
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [self.env.get("PYTHONPATH"), str(REPO)]))

    def __enter__(self) -> Workers:
        atexit.register(self.stop)
        super().__enter__()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> None:
        """Block until every worker answers a ping (or raise :class:`WorkerError`)."""
        waiting = {self.node_name(role) for role in self.roles}
        deadline = time.monotonic() + START_TIMEOUT
        while waiting:
            self.check()
            if time.monotonic() > deadline:
                raise WorkerError(f"workers {sorted(waiting)} did not answer within {START_TIMEOUT} s")
            for reply in self.app.control.ping(destination=sorted(waiting), timeout=1.0):
                waiting -= set(reply)

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

    def kill(self, role: str) -> None:
        """SIGKILL a worker's whole process group (the worker and any dbt it runs) and reap it."""
        process = self.processes[role]
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()

    @contextlib.contextmanager
    def paused(self, role: str) -> Iterator[None]:
        """Freeze one worker (SIGSTOP) for the block, then let it go on (SIGCONT)."""
        os.kill(self.pid(role), signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.pid(role), signal.SIGCONT)

    def cpu_seconds(self) -> dict[str, float]:
        """User+system CPU seconds each worker has used so far."""
        return {role: process_cpu_seconds(process.pid) for role, process in self.processes.items()}


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


def process_peak_rss_bytes(pid: int) -> int:
    """Peak resident memory of one process since its start or the last :func:`reset_peak_rss` (VmHWM)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise WorkerError(f"/proc/{pid}/status has no VmHWM line")


def reset_peak_rss(pid: int) -> bool:
    """Reset a process's peak RSS to its current RSS (Linux ``clear_refs`` 5), so the next peak is one run's.

    False where the kernel or permissions refuse: the peak then spans the earlier runs too.
    """
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True
