"""The embedded default: real Celery workers on this machine, with nothing to install or start.

``dbt-celery run`` uses it when no broker is configured. It starts two ordinary
``celery -A dbt_celery worker`` processes on a filesystem broker and a SQLite result
store under the state directory, the same code path as production:

* a solo worker for the producer and fallback queues: one dbt invocation at a time,
  dbt imported once at start-up (so DuckDB never sees two writers);
* a threads worker for the consumer queue: light tasks that never import dbt.

On exit the workers get a warm shutdown (SIGTERM), then SIGKILL if they linger.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from celery import Celery

from dbt_celery.config import CONSUMER_QUEUE, FALLBACK_QUEUE, PRODUCER_QUEUE, create_app, embedded_settings, settings_from_env
from dbt_celery.errors import DbtCeleryError

#: Seconds a worker gets to finish its shutdown before it is killed.
SHUTDOWN_GRACE = 15.0
#: Threads of the consumer worker (consumers only poll the store; they never run dbt).
CONSUMER_THREADS = 8


class WorkerDied(DbtCeleryError):
    """An embedded worker process exited while the run still needed it."""


class EmbeddedWorkers:
    """Start the embedded default's workers for the duration of a ``with`` block."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.session = uuid.uuid4().hex[:12]
        self.broker_dir = root / "broker" / self.session
        self.log_dir = root / "logs"
        self.app: Celery = create_app({**settings_from_env({}), **embedded_settings(root, self.broker_dir)})
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> "EmbeddedWorkers":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._start("producer", [PRODUCER_QUEUE, FALLBACK_QUEUE], ["-P", "solo"], preload_dbt=True)
        self._start("consumer", [CONSUMER_QUEUE], ["-P", "threads", "-c", str(CONSUMER_THREADS)], preload_dbt=False)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _start(self, name: str, queues: list[str], pool: list[str], *, preload_dbt: bool) -> None:
        env = {
            **os.environ,
            "DBT_CELERY_STATE_DIR": str(self.root),
            "DBT_CELERY_BROKER_DIR": str(self.broker_dir),
            "CELERY_CONFIG_MODULE": "dbt_celery._no_config",
            "DBT_CELERY_PRELOAD_DBT": "1" if preload_dbt else "",
        }
        env.pop("CELERY_BROKER_URL", None)
        env.pop("CELERY_RESULT_BACKEND", None)
        command = [
            sys.executable, "-m", "celery", "-A", "dbt_celery", "worker",
            "-Q", ",".join(queues), *pool, "-n", f"{name}-{self.session}@%h",
            "--loglevel", "INFO", "-E", "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        log = open(self.log_file(name), "ab")
        self._processes[name] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def log_file(self, name: str) -> Path:
        """The log file of one embedded worker."""
        return self.log_dir / f"{name}-{self.session}.log"

    def check(self) -> None:
        """Raise :class:`WorkerDied` if a worker exited early, with the end of its log."""
        for name, process in self._processes.items():
            if process.poll() is not None:
                tail = self.log_file(name).read_text(errors="replace")[-2000:]
                raise WorkerDied(f"the embedded {name} worker exited with code {process.returncode}:\n{tail}")

    def stop(self) -> None:
        """Shut the workers down and remove this session's broker folder."""
        for process in self._processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self._processes.values():
            try:
                process.wait(SHUTDOWN_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.broker_dir, ignore_errors=True)
