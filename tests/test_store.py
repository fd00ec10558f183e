"""The status store: payload encoding, refusing bad payloads and unusable backends, claims."""

from __future__ import annotations

import base64
import json
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from celery import Celery

from dbt_celery.config import create_app, embedded_settings
from dbt_celery.errors import PayloadError, UnsupportedBackend
from dbt_celery.events import NodeEvent, Outcome
from dbt_celery.store import MAX_MESSAGE_CHARS, StatusStore, decode_payload, encode_payload


@pytest.fixture
def sqlite_app(tmp_path) -> Celery:
    return create_app(embedded_settings(tmp_path))


def test_payload_is_base64_of_zlib_json():
    raw = encode_payload({"unique_id": "model.p.a", "n": 1})
    assert json.loads(zlib.decompress(base64.b64decode(raw))) == {"n": 1, "unique_id": "model.p.a"}
    assert decode_payload(raw) == {"n": 1, "unique_id": "model.p.a"}


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"not base64 at all!", "not compressed JSON"),
        (base64.b64encode(b"plain bytes"), "not compressed JSON"),
        (base64.b64encode(zlib.compress(b"{broken json")), "not compressed JSON"),
        (base64.b64encode(zlib.compress(b"[1, 2]")), "expected a JSON object"),
        (base64.b64encode(zlib.compress(b'{"a": 1}')[:-4]), "truncated"),
    ],
)
def test_corrupt_payloads_are_refused(raw, message):
    with pytest.raises(PayloadError, match=message):
        decode_payload(raw)


def test_oversized_payload_is_refused_without_inflating_it():
    bomb = base64.b64encode(zlib.compress(b'{"a": "' + b"x" * 50_000_000 + b'"}'))
    assert len(bomb) < 100_000
    with pytest.raises(PayloadError, match="larger than"):
        decode_payload(bomb)


def test_backends_that_cannot_serve_are_refused():
    rpc = Celery(set_as_current=False, broker="memory://", backend="rpc://")
    with pytest.raises(UnsupportedBackend, match="rpc://"):
        StatusStore(rpc.backend)
    cache = Celery(set_as_current=False, broker="memory://", backend="cache+memory://")
    with pytest.raises(UnsupportedBackend, match="set-if-absent"):
        StatusStore(cache.backend)


def test_node_records_round_trip_and_long_messages_are_cut(sqlite_app):
    store = StatusStore(sqlite_app.backend)
    event = NodeEvent("model.p.a", "model", "error", Outcome.FAILED, message="x" * (MAX_MESSAGE_CHARS * 2))
    store.put_node_event("run1", event)
    stored = store.node_event("run1", "model.p.a")
    assert stored.outcome is Outcome.FAILED and stored.dbt_status == "error"
    assert len(stored.message) < MAX_MESSAGE_CHARS + 20 and stored.message.endswith("[truncated]")
    assert store.node_event("run1", "model.p.missing") is None


def test_a_foreign_value_under_our_key_is_a_payload_error(sqlite_app):
    store = StatusStore(sqlite_app.backend)
    sqlite_app.backend.set(store.key("run1", "nodefinished_model.p.a"), encode_payload({"hello": "world"}))
    with pytest.raises(PayloadError, match="not a node record"):
        store.node_event("run1", "model.p.a")


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_claims_are_granted_once_under_contention(backend, sqlite_app, redis_app):
    app = sqlite_app if backend == "sqlite" else redis_app
    store = StatusStore(app.backend)
    run_id = f"claims-{backend}-{id(store)}"
    with ThreadPoolExecutor(8) as pool:
        granted = list(pool.map(lambda _: store.claim(run_id, "producer"), range(32)))
    assert granted.count(True) == 1
