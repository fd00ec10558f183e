"""The floor of a Celery worker: a bare ``celery worker`` of a trivial app beside the consumer worker.

Same command shape as the consumer worker (``-P threads -c 4 -E --without-gossip
--without-mingle``, same Redis broker, same interpreter and installed packages), but the
app is :mod:`benchmarks.bare`, with one no-op task. Its RSS right after start and after
running as many trivial tasks as asked tells what of the consumer worker's RSS any
Celery worker here pays (the ``celery`` command loads every installed CLI plugin), and its
CPU seconds over those tasks what one delivered, executed and stored task costs any worker.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any

from celery import Celery

from benchmarks.bare import BARE_QUEUE, NOOP_TASK
from benchmarks.events import STARTED, EventLog
from benchmarks.workers import (
    REPO,
    START_TIMEOUT,
    WorkerError,
    process_cpu_seconds,
    process_peak_rss_bytes,
    process_rss_bytes,
)
from dbt_celery.celery.workers import LocalWorkers

#: Seconds the bare worker gets to run its trivial tasks.
TASKS_TIMEOUT = 120.0


class BareWorker(LocalWorkers):
    """One ``celery -A benchmarks.bare worker`` process, started and stopped like the others."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        super().__init__(env, log_dir)
        self.roles = {"bare": ([BARE_QUEUE], ["-P", "threads", "-c", "4"], False)}
        self.cwd = REPO

    def command(self, role: str) -> list[str]:
        """The bare worker's command line (the consumer worker's flags, the trivial app)."""
        queues, pool, _ = self.roles[role]
        return [
            sys.executable, "-m", "celery", "-A", "benchmarks.bare", "worker",
            "-Q", ",".join(queues), *pool, "-n", self.node_name(role),
            "--loglevel", "INFO", "-E", "--without-gossip", "--without-mingle",
        ]  # fmt: skip


def measure_floor(app: Celery, env: dict[str, str], log_dir: Path, events: EventLog, tasks: int) -> dict[str, Any]:
    """RSS of a bare worker after start and after ``tasks`` no-op tasks (sent by ``app`` on the same broker), and its CPU."""
    with BareWorker(env, log_dir) as worker:
        name = worker.node_name("bare")
        deadline = time.monotonic() + START_TIMEOUT
        while not any(name in reply for reply in app.control.ping(destination=[name], timeout=1.0)):
            worker.check()
            if time.monotonic() > deadline:
                raise WorkerError(f"the bare worker {name} did not answer within {START_TIMEOUT} s")
        pid = worker.processes["bare"].pid
        after_start = process_rss_bytes(pid)
        cpu_before = process_cpu_seconds(pid)
        ids = [str(uuid.uuid4()) for _ in range(tasks)]
        for number, task_id in enumerate(ids):
            app.send_task(NOOP_TASK, args=[number], task_id=task_id, queue=BARE_QUEUE)
        deadline = time.monotonic() + TASKS_TIMEOUT
        while True:
            done = sum(1 for timeline in events.of(ids).values() if any(kind == STARTED for kind, _ in timeline))
            if done >= tasks or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        time.sleep(0.5)  # the last tasks finish after their task-started event
        return {
            "rss_after_start": after_start,
            "tasks": tasks,
            "tasks_started": done,
            "rss_after_tasks": process_rss_bytes(pid),
            "cpu_seconds": process_cpu_seconds(pid) - cpu_before,
            "peak_rss": process_peak_rss_bytes(pid),
        }
