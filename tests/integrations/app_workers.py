"""Worker processes of a user's Celery app (``celery -A <app> worker``), and waiting for what they do."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Mapping, TypeVar

import duckdb

from dbt_celery.celery.workers import LocalWorkers

T = TypeVar("T")

#: The queue of a Celery app's own tasks when it names none (``task_default_queue``).
DEFAULT_QUEUE = "celery"

#: Seconds a test waits for a jaffle_shop run (one dbt build, about 5 s, on a busy machine).
RUN_PATIENCE = 180.0
#: The tables and views a build of jaffle_shop leaves behind.
JAFFLE_SHOP_RELATIONS = {
    "raw_customers", "raw_orders", "raw_payments", "stg_customers", "stg_orders", "stg_payments",
    "orders", "customers", "orders_snapshot",
}  # fmt: skip


class AppWorkers(LocalWorkers):
    """The examples' two workers, started with ``-A app`` from ``cwd``: dbt builds, then light tasks.

    The producer worker is a one-process prefork pool (``-c 1``); the consumer worker a
    thread pool that also serves the app's default queue, where the app's own tasks and
    beat's ``dbt_celery.start_run`` go.
    """

    def __init__(self, app: str, cwd: Path, env: Mapping[str, str], log_dir: Path) -> None:
        super().__init__(env, log_dir)
        for inherited in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "CELERY_CONFIG_MODULE"):
            self.env.pop(inherited, None)  # Celery prefers them to the app's own settings
        self.env.update(env)
        self.app = app
        self.cwd = cwd
        queues, _, preload = self.roles["producer"]
        self.roles["producer"] = (queues, ["-c", "1"], preload)  # prefork, as the examples' READMEs say
        self.roles["consumer"][0].append(DEFAULT_QUEUE)

    def command(self, role: str) -> list[str]:
        """``celery -A <app> worker ...`` for one role."""
        command = super().command(role)
        command[command.index("-A") + 1] = self.app
        return command


def wait_for(read: Callable[[], T], done: Callable[[T], bool], what: str, workers: AppWorkers) -> T:
    """Read until ``done`` says so; fail with the last reading if that takes longer than ``RUN_PATIENCE``."""
    deadline = time.monotonic() + RUN_PATIENCE
    while True:
        value = read()
        if done(value):
            return value
        workers.check()
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached after {RUN_PATIENCE} s; last reading: {value!r}")
        time.sleep(0.5)


def relations(duckdb_path: Path) -> set[str]:
    """The tables and views in a DuckDB file."""
    with duckdb.connect(str(duckdb_path), read_only=True) as connection:
        return {name for (name,) in connection.execute("select table_name from information_schema.tables").fetchall()}
