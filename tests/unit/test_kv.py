"""The key-value adapters that need no server: in-memory and the embedded SQLite file."""

from __future__ import annotations

import pytest

from dbt_celery.core.kv import MemoryKV, SQLiteKV
from tests.unit import kv_contract


@pytest.fixture(params=["memory", "sqlite"])
def kv(request, tmp_path):
    return MemoryKV() if request.param == "memory" else SQLiteKV(tmp_path / "store.sqlite")


def test_get_and_set_many(kv):
    kv_contract.check_get_and_set_many(kv)


def test_set_if_is_all_or_nothing(kv):
    kv_contract.check_set_if(kv)


def test_claims_are_granted_once_under_contention(kv):
    kv_contract.check_claims_under_contention(kv, "claim")


def test_add_many_writes_only_absent_keys(kv):
    kv_contract.check_add_many(kv)


def test_sqlite_values_are_shared_by_two_handles_on_one_file(tmp_path):
    first, second = SQLiteKV(tmp_path / "s.sqlite"), SQLiteKV(tmp_path / "s.sqlite")
    first.set_many({"k": b"v"})
    assert second.get_many(["k"]) == [b"v"]
    assert not second.set_if({"k": None}, {"k": b"w"})


def test_sqlite_values_expire(tmp_path):
    kv = SQLiteKV(tmp_path / "s.sqlite", expires=0.01)
    kv.set_many({"k": b"v"})
    import time

    time.sleep(0.05)
    assert kv.get_many(["k"]) == [None]
    assert kv.set_if({"k": None}, {"k": b"again"})


def test_a_sqlite_store_that_cannot_be_written_says_so(tmp_path):
    from dbt_celery.core.kv import is_transient
    from dbt_celery.errors import UnsupportedBackend

    kv = SQLiteKV(tmp_path / "s.sqlite")
    kv.set_many({"k": b"v"})
    kv.connection().execute("PRAGMA query_only = ON")  # as a read-only file would be
    with pytest.raises(UnsupportedBackend, match="cannot be written") as raised:
        kv.set_many({"k": b"w"})
    assert not is_transient(raised.value)  # a consumer ends with an error outcome, it does not poll forever
    assert kv.get_many(["k"]) == [b"v"]
