"""Fixtures of the integration tests: a Django or Flask app with its own workers and Redis.

Each module takes a Redis database of its own: the session's standalone workers
(``redis_workers``) listen on dbt-celery's queue names in the suite's database, and
would otherwise take the app's messages and run them with the wrong app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import redis

from tests.conftest import REDIS_SERVER, free_redis_db
from tests.helpers import JAFFLE_SHOP, copy_project


@pytest.fixture(scope="module")
def app_redis_url() -> Iterator[str]:
    """A Redis database of this module only (the app's broker, results and dbt-celery store)."""
    url = f"{REDIS_SERVER}/{free_redis_db()}"
    yield url
    redis.Redis.from_url(url).flushdb()


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """This module's copy of examples/jaffle_shop, the DuckDB file it builds into, and a folder for the rest."""
    root = tmp_path_factory.mktemp("app")
    return {"root": root, "project": copy_project(JAFFLE_SHOP, root), "duckdb": root / "shop.duckdb"}
