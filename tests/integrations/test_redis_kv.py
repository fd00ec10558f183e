"""The Redis key-value adapter keeps the same contract as the others, on the suite's own Redis database."""

from __future__ import annotations

import uuid

import pytest

from dbt_celery.core.kv import RedisKV
from tests.unit import kv_contract


@pytest.fixture
def prefix() -> str:
    return f"kv-test-{uuid.uuid4().hex}:"


def test_redis_add_many_writes_only_absent_keys_in_one_round_trip(redis_url, redis_client, prefix):
    kv = RedisKV.from_url(redis_url, expires=60)
    kv_contract.check_add_many(kv, prefix)
    assert 0 < redis_client.ttl(f"{prefix}new1") <= 60  # claims expire with the run's other keys


def test_redis_claims_are_granted_once_under_contention(redis_url, prefix):
    kv_contract.check_claims_under_contention(RedisKV.from_url(redis_url), f"{prefix}claim")
