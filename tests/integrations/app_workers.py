"""Worker processes of a user's Celery app (``celery -A <app> worker``), and waiting for what they do."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import duckdb

from dbt_celery.celery.workers import LocalWorkers
from dbt_celery.core.summary import ENDED_RUN_STATES
from tests import helpers

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
    readings: list[T] = []

    def accepted() -> T | None:
        readings.append(read())
        return readings[-1] if done(readings[-1]) else None

    try:
        return helpers.wait_for(
            accepted, RUN_PATIENCE, what, check=workers.check, interval=0.5, accept=lambda v: v is not None
        )
    except AssertionError:
        raise AssertionError(f"{what} not reached after {RUN_PATIENCE} s; last reading: {readings[-1]!r}") from None


def example_env(redis_url: str, paths: Mapping[str, Path]) -> dict[str, str]:
    """The environment both example apps read: their Redis, the copied project, its DuckDB file, workspaces."""
    return {
        "REDIS_URL": redis_url,
        "DBT_PROJECT_DIR": str(paths["project"]),
        "DBT_DUCKDB_PATH": str(paths["duckdb"]),
        "DBT_CELERY_WORKSPACE_DIR": str(paths["root"] / "workspaces"),
    }


def wait_for_the_example(status_of: Callable[[], dict[str, Any]], workers: AppWorkers, duckdb_path: Path) -> dict:
    """Wait for a run of jaffle_shop to end (``status_of`` reads the app's status view); check it built."""
    status = wait_for(status_of, lambda s: s["status"] in ENDED_RUN_STATES, "the run's end", workers)
    assert status["status"] == "success", status
    assert len(status["nodes"]) == 27
    assert {node["status"] for node in status["nodes"].values()} == {"success"}
    assert JAFFLE_SHOP_RELATIONS <= relations(duckdb_path)
    return status


def relations(duckdb_path: Path) -> set[str]:
    """The tables and views in a DuckDB file."""
    with duckdb.connect(str(duckdb_path), read_only=True) as connection:
        return {name for (name,) in connection.execute("select table_name from information_schema.tables").fetchall()}
