"""What every key-value adapter must do, as plain functions run against each adapter."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from dbt_celery.core.kv import KeyValue, compare_and_set, set_if_absent


def check_get_and_set_many(kv: KeyValue) -> None:
    kv.set_many({"a": b"1", "b": b"2"})
    assert kv.get_many(["a", "missing", "b"]) == [b"1", None, b"2"]
    kv.set_many({"a": b"3"})
    assert kv.get_many(["a"]) == [b"3"]


def check_set_if(kv: KeyValue) -> None:
    assert set_if_absent(kv, "claim", b"x")
    assert not set_if_absent(kv, "claim", b"y")
    assert kv.get_many(["claim"]) == [b"x"]
    assert not compare_and_set(kv, "claim", b"wrong", b"z")
    assert compare_and_set(kv, "claim", b"x", b"z")
    # A guarded multi-write: all items or none, decided by the guard only.
    assert not kv.set_if({"claim": b"x"}, {"r1": b"1", "r2": b"2"})
    assert kv.get_many(["r1", "r2"]) == [None, None]
    assert kv.set_if({"claim": b"z", "absent": None}, {"r1": b"1", "r2": b"2"})
    assert kv.get_many(["r1", "r2"]) == [b"1", b"2"]


def check_claims_under_contention(kv: KeyValue, key: str) -> None:
    with ThreadPoolExecutor(8) as pool:
        granted = list(pool.map(lambda n: set_if_absent(kv, key, str(n).encode()), range(32)))
    assert granted.count(True) == 1


def check_add_many(kv: KeyValue, prefix: str = "") -> None:
    kv.set_many({f"{prefix}taken": b"old"})
    keys = [f"{prefix}taken", f"{prefix}new1", f"{prefix}new2"]
    assert kv.add_many({key: b"mine" for key in keys}) == [False, True, True]
    assert kv.get_many(keys) == [b"old", b"mine", b"mine"]  # a taken key keeps its value
    assert kv.add_many({key: b"again" for key in keys}) == [False, False, False]
    assert kv.add_many({}) == []
    with ThreadPoolExecutor(8) as pool:  # each key granted to exactly one of the contenders
        grants = list(pool.map(lambda n: kv.add_many({f"{prefix}c{i}": str(n).encode() for i in range(5)}), range(16)))
    assert [sum(grant[i] for grant in grants) for i in range(5)] == [1] * 5
