"""The lease keeper: renews, stops its holder once per reason, and ends when the lease is taken."""

from __future__ import annotations

import time

from dbt_celery.core.keeper import LOST, LeaseKeeper
from dbt_celery.core.kv import MemoryKV
from dbt_celery.core.store import PRODUCER_LEASE, StatusStore
from tests.helpers import wait_for


def wait_until(condition, timeout: float = 5.0) -> None:
    wait_for(condition, timeout, "the condition", interval=0.01)


def test_a_cancel_stops_the_holder_once_and_the_lease_stays_renewed():
    store = StatusStore(MemoryKV())
    held = store.acquire("r", PRODUCER_LEASE, "me", ttl=1.0)
    stops: list[str] = []
    beats = []
    with LeaseKeeper(store, held, 0.01, stops.append, lambda: "cancelled", lambda: beats.append(1)):
        wait_until(lambda: len(beats) >= 10)
    assert stops == ["cancelled"]  # asked once, not on every beat
    assert store.liveness("r", PRODUCER_LEASE).alive(time.time())  # still ours while dbt stops


def test_a_lost_lease_stops_the_holder_and_ends_the_keeper():
    store = StatusStore(MemoryKV())
    held = store.acquire("r", PRODUCER_LEASE, "stalled", ttl=0.05, now=0)
    assert store.acquire("r", PRODUCER_LEASE, "resumed", ttl=60) is not None  # taken over
    stops: list[str] = []
    keeper = LeaseKeeper(store, held, 0.01, stops.append, lambda: "cancelled")
    with keeper:
        wait_until(lambda: stops)
        wait_until(lambda: not keeper._thread.is_alive())  # nothing more to keep
    assert stops == [LOST] and keeper.lost
