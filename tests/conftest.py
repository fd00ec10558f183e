"""Shared fixtures: a real Redis-backed Celery setup with real worker processes.

Workers are started once per session (a dbt process costs seconds here) and shared by
every test that needs them; the tests of the dbt layer need no Celery at all.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest
import redis
from celery import Celery

from dbt_celery.config import create_app, settings_from_env
from dbt_celery.workers import LocalWorkers

# pytest-celery's own worker fixtures need Docker; use Celery's in-process ones instead.
pytest_plugins = ("celery.contrib.pytest",)

REPO = Path(__file__).resolve().parents[1]
PROJECTS = Path(__file__).resolve().parent / "projects"
REDIS_URL = os.environ.get("DBT_CELERY_TEST_REDIS", "redis://127.0.0.1:6379/5")


def copy_project(name: str | Path, destination: Path) -> Path:
    """Copy a fixture (or example) project into a temp folder and return its path."""
    source = Path(name) if Path(name).is_absolute() else PROJECTS / name
    target = destination / source.name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*"))
    return target


@pytest.fixture(scope="session")
def redis_client() -> redis.Redis:
    """A client of the test Redis database, emptied at the start of the session."""
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    return client


@pytest.fixture(scope="session")
def worker_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of the test workers and of CLI runs against them."""
    return {
        "CELERY_BROKER_URL": REDIS_URL,
        "CELERY_RESULT_BACKEND": REDIS_URL,
        "CELERY_CONFIG_MODULE": "dbt_celery._no_config",
        "DBT_CELERY_WORKSPACE_DIR": str(tmp_path_factory.mktemp("workspaces")),
    }


@pytest.fixture(scope="session")
def redis_app(redis_client: redis.Redis, worker_env: dict[str, str]) -> Celery:
    """A Celery app on the test Redis, as a user's process would have."""
    return create_app(settings_from_env(worker_env))


@pytest.fixture(scope="session")
def redis_workers(redis_app: Celery, worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalWorkers]:
    """A producer worker and a consumer worker (real processes) on the test Redis."""
    with LocalWorkers(worker_env, tmp_path_factory.mktemp("worker-logs")) as workers:
        yield workers
