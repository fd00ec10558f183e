"""The fault harness itself, on an undisturbed run: private Redis, audit table, workers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from dbt_celery.run import submit
from tests.faults.fault_fixtures import SHARED_REDIS_SERVER, Audit, FaultWorkers, PrivateRedis, audited_spec, fault_app

MODELS = {"a", "b", "c", "d", "e", "f", "g"}


def test_undisturbed_run_builds_every_model_once(
    private_redis: PrivateRedis, audit: Audit, audited_project: Path, fault_workers: Callable[..., FaultWorkers]
) -> None:
    workers = fault_workers(private_redis.url)
    run = submit(audited_spec(audited_project, audit, sleep=0.2), app=fault_app(private_redis.url))
    status = run.wait(timeout=180)
    assert status.state == "success", (status.error, workers.tail("producer"))
    assert status.count("success") == len(status.nodes) == 9  # 7 models, 2 not_null tests
    assert audit.builds_per_node() == dict.fromkeys(MODELS, 1)
    assert audit.unfinished() == [] and audit.overlaps() == []
    assert len({row.invocation_id for row in audit.rows()}) == 1  # all built by the producer
    pattern = f"dbt-celery-{run.id}-*"
    assert private_redis.client().keys(pattern)
    # Nothing of it reached the shared server, in any of its databases.
    assert not any(redis.Redis.from_url(f"{SHARED_REDIS_SERVER}/{db}").keys(pattern) for db in range(16))


def test_private_redis_stops_and_starts_again(private_redis: PrivateRedis) -> None:
    private_redis.client().set("k", "v")
    private_redis.stop()
    with pytest.raises(redis.ConnectionError):
        private_redis.client().ping()
    private_redis.start()
    client = private_redis.client()
    assert client.ping() and client.get("k") is None  # no persistence
    assert private_redis.port != 6379
