"""Helpers of the fault-injection tests: a private Redis, an audit table, signalled workers.

Everything is real: a ``redis-server`` of the test's own on a free port (never the shared
one on 6379), the local PostgreSQL, and ``celery worker`` processes. Test modules import
what they use explicitly (``from tests.faults.fault_fixtures import audited_spec``); the fixtures that
build these objects are in this folder's conftest.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import psycopg2
import redis
from celery import Celery

from dbt_celery.celery.config import create_app, settings_from_env
from dbt_celery.celery.workers import LocalWorkers
from dbt_celery.core.spec import RunSpec

AUDITED_PROJECT = Path(__file__).resolve().parents[1] / "projects" / "audited"
#: The local PostgreSQL (trust auth: any password is accepted).
POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}
#: The Redis server the rest of the suite (and maybe other suites) shares; fault tests leave no keys there.
SHARED_REDIS_SERVER = "redis://127.0.0.1:6379"
#: Seconds a fault worker gets to shut down at teardown before its group is killed.
TEARDOWN_GRACE = 5.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A ``redis-server`` of one test: no persistence, its own port and folder, restartable."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server (again, on the same port) and wait until it answers PING."""
        if self.process is not None and self.process.poll() is None:
            return
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(self.directory)]  # fmt: skip
        with open(self.directory / "redis.log", "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client().ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on {self.port} did not start: {self.log()[-1000:]}") from None
                time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the server with ``sig`` (SIGKILL if it lingers) and wait for it to exit."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def client(self) -> redis.Redis:
        """A new client of database 0 that fails fast while the server is down."""
        return redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=5)

    def log(self) -> str:
        """The server's log so far."""
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""


def postgres_connection() -> Any:
    """An autocommit connection to the local PostgreSQL."""
    connection = psycopg2.connect(**POSTGRES)
    connection.autocommit = True
    return connection


class AuditRow(NamedTuple):
    """One row of the audit table: a node's build started or ended in one dbt invocation."""

    node: str
    invocation_id: str
    phase: str  # "start" | "end"
    at: datetime


class Audit:
    """A unique PostgreSQL schema holding the audit table the audited project's hooks write."""

    def __init__(self) -> None:
        self.schema = f"faults_{uuid.uuid4().hex[:10]}"
        self.table = f"{self.schema}.audit_log"

    def create(self) -> None:
        """Create the schema and the empty audit table."""
        self._execute(f"create schema {self.schema}; "
                      f"create table {self.table} (node text, invocation_id text, phase text, at timestamptz)")  # fmt: skip

    def drop(self) -> None:
        """Drop the schema with the audit table and every model built into it."""
        self._execute(f"drop schema if exists {self.schema} cascade")

    def rows(self) -> list[AuditRow]:
        """Every row, oldest first, as (node, invocation_id, phase, at) tuples."""
        connection = postgres_connection()
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"select node, invocation_id, phase, at from {self.table} order by at, phase desc")
                return [AuditRow(*row) for row in cursor.fetchall()]
        finally:
            connection.close()

    def intervals(self) -> dict[tuple[str, str], tuple[datetime, datetime | None]]:
        """(node, invocation) -> (first start, last end or None while unfinished)."""
        spans: dict[tuple[str, str], tuple[datetime, datetime | None]] = {}
        for row in self.rows():
            key = (row.node, row.invocation_id)
            start, end = spans.get(key, (row.at, None))
            spans[key] = (min(start, row.at), end) if row.phase == "start" else (start, row.at)
        return spans

    def builds_per_node(self) -> dict[str, int]:
        """Node -> number of completed builds (a start and an end in the same invocation)."""
        counts: dict[str, int] = {}
        for (node, _), (_, end) in self.intervals().items():
            counts[node] = counts.get(node, 0) + (end is not None)
        return counts

    def unfinished(self) -> list[tuple[str, str]]:
        """(node, invocation) of the builds that started and never ended (failed or killed)."""
        return [key for key, (_, end) in self.intervals().items() if end is None]

    def overlaps(self) -> list[tuple[str, str, str]]:
        """(node, inv1, inv2) for two invocations whose builds of one node overlapped in time.

        A build without an end counts as still running now.
        """
        now = datetime.now(timezone.utc)
        spans = sorted(self.intervals().items(), key=lambda item: item[1][0])
        found = []
        for i, ((node, inv1), (_start1, end1)) in enumerate(spans):
            for (other, inv2), (start2, _) in spans[i + 1 :]:
                if other == node and inv2 != inv1 and start2 < (end1 or now):
                    found.append((node, inv1, inv2))
        return found

    def started_after(self, t: datetime) -> list[AuditRow]:
        """The 'start' rows later than ``t`` (a naive ``t`` is taken as local time)."""
        t = t if t.tzinfo else t.astimezone()
        return [row for row in self.rows() if row.phase == "start" and row.at > t]

    def _execute(self, sql: str) -> None:
        connection = postgres_connection()
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
        finally:
            connection.close()


def signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to a process's whole group (a worker and any dbt process it started)."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


class FaultWorkers(LocalWorkers):
    """LocalWorkers that remember every process they started and can be signalled by role."""

    def __init__(self, env: Mapping[str, str], log_dir: Path) -> None:
        super().__init__(env, log_dir)
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, role: str) -> subprocess.Popen[bytes]:
        """Start (or restart) a role's worker; the old process, if any, stays tracked."""
        process = super().start(role)
        self.started.append(process)
        return process

    def signal(self, role: str, sig: int) -> None:
        """Send ``sig`` (SIGKILL, SIGSTOP, SIGCONT, ...) to the current worker group of ``role``."""
        signal_group(self.processes[role], sig)

    def kill(self, role: str) -> None:
        """SIGKILL the worker group of ``role`` and reap the worker."""
        self.signal(role, signal.SIGKILL)
        self.processes[role].wait()

    def pause(self, role: str) -> None:
        """SIGSTOP the worker group of ``role`` (it holds its tasks but does nothing)."""
        self.signal(role, signal.SIGSTOP)

    def resume(self, role: str) -> None:
        """SIGCONT the worker group of ``role``."""
        self.signal(role, signal.SIGCONT)

    def restart(self, role: str) -> subprocess.Popen[bytes]:
        """Kill the worker group of ``role`` if it still runs, then start a new worker."""
        if self.processes[role].poll() is None:
            self.kill(role)
        return self.start(role)

    def tail(self, role: str, chars: int = 3000) -> str:
        """The end of a role's log (every process of the role writes to the same file)."""
        path = self.log_file(role)
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self) -> None:
        """Stop every process ever started: SIGCONT+SIGTERM, then SIGKILL after a short grace."""
        for process in self.started:
            signal_group(process, signal.SIGCONT)
            if process.poll() is None:
                signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + TEARDOWN_GRACE
        for process in self.started:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            signal_group(process, signal.SIGKILL)  # also any dbt child left in the group
            process.wait()


def fault_env(redis_url: str, workspace_dir: Path) -> dict[str, str]:
    """Environment of fault workers and apps: broker and results on ``redis_url``."""
    return {
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "CELERY_CONFIG_MODULE": "dbt_celery.celery.no_config",
        "DBT_CELERY_WORKSPACE_DIR": str(workspace_dir),
        "PGPASSWORD": "x",
    }


def fault_app(redis_url: str) -> Celery:
    """A Celery app on ``redis_url``, as a user's process would have (like tests/conftest.py)."""
    return create_app(settings_from_env({"CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url}))


def audited_spec(project_dir: str | Path, audit: Audit, *, sleep: float = 0.2, **options: Any) -> RunSpec:
    """A RunSpec building the audited project into the audit's schema.

    Every model sleeps ``sleep`` seconds in PostgreSQL; ``options`` are further RunSpec
    fields (``vars`` are merged over audit_table and sleep).
    """
    profile = {**POSTGRES, "type": "postgres", "schema": audit.schema, "password_env": "PGPASSWORD"}
    variables = {"audit_table": audit.table, "sleep": sleep, **options.pop("vars", {})}
    return RunSpec(project_dir=str(project_dir), profile=profile, vars=variables, **options)
