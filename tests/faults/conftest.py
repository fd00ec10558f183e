"""Fixtures of the fault-injection tests: private Redis, audit table, fault workers.

The helpers behind them live in fault_fixtures.py (``from tests.faults.fault_fixtures import ...``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.fault_fixtures import AUDITED_PROJECT, FaultWorkers, PrivateRedis, fault_env


@pytest.fixture
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """A redis-server of this test only (free port, no persistence), stopped at teardown."""
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def audited_project(tmp_path: Path) -> Path:
    """A fresh copy of tests/projects/audited in a temp folder."""
    return Path(shutil.copytree(AUDITED_PROJECT, tmp_path / "audited"))


@pytest.fixture
def fault_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., FaultWorkers]]:
    """Factory ``(redis_url, **env) -> FaultWorkers``: started producer and consumer workers.

    Every worker process a test started (restarts included) is stopped at teardown.
    """
    started: list[FaultWorkers] = []

    def start(redis_url: str, **env: str) -> FaultWorkers:
        root = tmp_path_factory.mktemp("fault-workers")
        workers = FaultWorkers({**fault_env(redis_url, root / "workspaces"), **env}, root / "logs")
        started.append(workers)
        return workers.__enter__()

    yield start
    for workers in reversed(started):
        workers.stop()
