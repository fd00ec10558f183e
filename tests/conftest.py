"""Shared fixtures: a real Redis-backed Celery setup with real worker processes.

Tests are sorted by what they need, and marked by folder (``-m unit`` runs the fast
layer alone):

* ``tests/unit``   no services, no dbt process: records, policy, store, plan, layering;
* ``tests/dbt``    real dbt on DuckDB and PostgreSQL, no Celery;
* ``tests/e2e``    real Redis, real worker processes, real dbt;
* ``tests/faults`` the same under faults: killed and stalled workers, a private Redis.
* ``tests/integrations`` real beat, Django and Flask apps with their own workers.

Workers start once per session (a dbt process costs seconds here) and are shared.
The suite takes a Redis database nobody else uses (see :func:`free_redis_db`) and
empties only that one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
import redis
from celery import Celery

from dbt_celery.celery.config import create_app, settings_from_env
from dbt_celery.celery.workers import LocalWorkers
from tests.faults.fault_fixtures import Audit

LAYERS = ("unit", "dbt", "e2e", "faults", "integrations")
REDIS_SERVER = os.environ.get("DBT_CELERY_TEST_REDIS_SERVER", "redis://127.0.0.1:6379")
#: The key a suite leaves in the database it took, so other suites pass it by.
CLAIM_KEY = "dbt-celery-test-suite"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its layer, from its folder."""
    for item in items:
        layer = Path(str(item.fspath)).parent.name
        if layer in LAYERS:
            item.add_marker(getattr(pytest.mark, layer))


def free_redis_db(server: str = REDIS_SERVER) -> int:
    """Take the highest-numbered empty Redis database and mark it as this suite's."""
    for db in range(15, 0, -1):
        client = redis.Redis.from_url(f"{server}/{db}")
        if client.dbsize() == 0 and client.set(CLAIM_KEY, os.getpid(), nx=True, ex=6 * 3600):
            if client.dbsize() == 1:  # nobody wrote in between
                return db
            client.delete(CLAIM_KEY)
    raise RuntimeError(f"no empty Redis database left on {server}")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of this suite's own Redis database, emptied again at the end."""
    db = int(os.environ["DBT_CELERY_TEST_REDIS_DB"]) if "DBT_CELERY_TEST_REDIS_DB" in os.environ else free_redis_db()
    url = f"{REDIS_SERVER}/{db}"
    yield url
    redis.Redis.from_url(url).flushdb()


@pytest.fixture(scope="session")
def redis_client(redis_url: str) -> redis.Redis:
    """A client of this suite's Redis database."""
    return redis.Redis.from_url(redis_url)


@pytest.fixture(scope="session")
def worker_env(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of the test workers and of CLI runs against them."""
    return {
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "CELERY_CONFIG_MODULE": "dbt_celery.celery.no_config",
        "DBT_CELERY_WORKSPACE_DIR": str(tmp_path_factory.mktemp("workspaces")),
        # A warehouse password only the workers know (tests/e2e/test_redshift_e2e.py's proxy checks it).
        "DBT_CELERY_TEST_WAREHOUSE_PASSWORD": "warehouse-pw-93b1e7",
    }


@pytest.fixture(scope="session")
def redis_app(worker_env: dict[str, str]) -> Celery:
    """A Celery app on the test Redis, as a user's process would have."""
    return create_app(settings_from_env(worker_env))


@pytest.fixture(scope="session")
def redis_workers(
    redis_app: Celery, worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalWorkers]:
    """A producer worker and a consumer worker (real processes) on the test Redis.

    They load :mod:`tests.signal_recorder`, which writes the signals they send to ``signals.jsonl``.
    """
    logs = tmp_path_factory.mktemp("worker-logs")
    workers = LocalWorkers({**worker_env, "DBT_CELERY_TEST_SIGNALS": str(logs / "signals.jsonl")}, logs)
    workers.extra_args += ["-I", "tests.signal_recorder"]
    with workers:
        yield workers


@pytest.fixture
def audit() -> Iterator[Audit]:
    """A PostgreSQL schema of this test with an empty audit table (it counts every build), dropped at teardown."""
    log = Audit()
    log.create()
    try:
        yield log
    finally:
        log.drop()
