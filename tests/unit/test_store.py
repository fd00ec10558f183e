"""The status store on the in-memory adapter: payloads, typed records, leases and fencing."""

from __future__ import annotations

import base64
import json
import zlib

import pytest

from dbt_celery.core.kv import MemoryKV
from dbt_celery.core.records import Lease, NodeEvent, NodeOutcome, NodeState, ProducerPhase, ProducerState, RunDocument
from dbt_celery.core.store import (
    MAX_MESSAGE_CHARS,
    PRODUCER_LEASE,
    StatusStore,
    decode_payload,
    encode_payload,
)
from dbt_celery.errors import PayloadError


@pytest.fixture
def store() -> StatusStore:
    return StatusStore(MemoryKV())


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


def test_node_records_round_trip_and_long_messages_are_cut(store):
    event = NodeEvent("model.p.a", "model", "error", NodeState.FAILED, message="x" * (MAX_MESSAGE_CHARS * 2))
    assert store.put_events("run1", [event])
    stored = store.node_event("run1", "model.p.a")
    assert stored.outcome is NodeState.FAILED and stored.dbt_status == "error"
    assert len(stored.message) < MAX_MESSAGE_CHARS + 20 and stored.message.endswith("[truncated]")
    assert store.node_event("run1", "model.p.missing") is None


def test_a_foreign_value_under_our_key_is_a_payload_error(store):
    store.kv.set_many({store.key("run1", "nodefinished_model.p.a"): encode_payload({"hello": "world"})})
    with pytest.raises(PayloadError, match="not a NodeEvent"):
        store.node_event("run1", "model.p.a")
    store.kv.set_many({store.key("run1", "producer"): encode_payload({"phase": "sleeping", "updated_at": 1})})
    with pytest.raises(PayloadError, match="not a ProducerState"):
        store.producer("run1")


def test_records_round_trip(store):
    store.put_run("r", RunDocument({"project_dir": "/p"}, 1.0, 2.0))
    store.put_producer("r", ProducerState(ProducerPhase.RUNNING, 5.0, generation=2, done=3, total=9))
    assert store.run("r") == RunDocument({"project_dir": "/p"}, 1.0, 2.0)
    assert store.producer("r").phase is ProducerPhase.RUNNING and store.producer("r").generation == 2


def test_the_first_outcome_wins(store):
    assert store.put_outcome("r", "model.p.a", NodeOutcome(NodeState.SUCCESS, "success"))
    assert not store.put_outcome("r", "model.p.a", NodeOutcome(NodeState.FAILED, "node_failed"))
    assert store.outcomes("r", ["model.p.a"])["model.p.a"].state is NodeState.SUCCESS


def test_resolving_a_node_records_its_outcome_and_its_report_claim_together(store):
    assert store.resolve("r", "model.p.a", NodeOutcome(NodeState.SUCCESS, "success"))
    assert not store.resolve("r", "model.p.a", NodeOutcome(NodeState.FAILED, "node_failed"))  # a second copy
    assert store.outcomes("r", ["model.p.a"])["model.p.a"].state is NodeState.SUCCESS
    assert not store.claim_report("r", "model.p.a")  # taken with the outcome
    # An outcome another party recorded (the watchdog, a failed upstream) is reported, not resolved again.
    assert store.put_outcome("r", "model.p.b", NodeOutcome(NodeState.UPSTREAM_FAILED, "upstream_failed"))
    assert not store.resolve("r", "model.p.b", NodeOutcome(NodeState.SUCCESS, "success"))
    assert store.claim_report("r", "model.p.b")


def test_claim_many_grants_each_claim_once(store):
    assert store.claim("r", "enqueue_a")
    assert store.claim_many("r", ["enqueue_a", "enqueue_b", "enqueue_c"]) == ["enqueue_b", "enqueue_c"]
    assert store.claim_many("r", ["enqueue_b"]) == []
    assert set(store.claims("r", ["enqueue_a", "enqueue_b", "enqueue_c", "enqueue_d"])) == {
        "enqueue_a",
        "enqueue_b",
        "enqueue_c",
    }


def test_a_lease_has_one_holder_at_a_time_and_generations_grow(store):
    first = store.acquire("r", PRODUCER_LEASE, "one", ttl=10, now=100)
    assert first is not None and first.generation == 1
    assert store.acquire("r", PRODUCER_LEASE, "two", ttl=10, now=105) is None  # alive
    second = store.acquire("r", PRODUCER_LEASE, "two", ttl=10, now=111)  # expired
    assert second is not None and second.generation == 2
    assert store.liveness("r", PRODUCER_LEASE).lease == Lease(2, "two", 10)


def test_writes_are_fenced_by_the_lease(store):
    stale = store.acquire("r", PRODUCER_LEASE, "stalled", ttl=10, now=100)
    fresh = store.acquire("r", PRODUCER_LEASE, "resumed", ttl=10, now=200)
    event = NodeEvent("model.p.a", "model", "success", NodeState.SUCCESS)
    assert not store.put_events("r", [event], stale)  # the stalled producer can write nothing
    assert not store.put_producer("r", ProducerState(ProducerPhase.FINISHED, 1.0), stale)
    assert not store.renew(stale)
    assert store.node_event("r", "model.p.a") is None
    assert store.put_events("r", [event], fresh) and store.renew(fresh)


def test_a_released_lease_is_never_taken_again(store):
    held = store.acquire("r", "build_model.p.a_1", "fallback", ttl=1, now=100)
    assert store.release(held)
    assert store.acquire("r", "build_model.p.a_1", "duplicate", ttl=1, now=500) is None
    assert store.liveness("r", "build_model.p.a_1").lease.done


def test_a_poll_reads_everything_a_consumer_needs(store):
    store.put_run("r", RunDocument({}, 1.0, 2.0))
    store.put_events("r", [NodeEvent("model.p.a", "model", "success", NodeState.SUCCESS)])
    held = store.acquire("r", PRODUCER_LEASE, "p", ttl=30)
    store.cancel("r", "because")
    poll = store.poll("r", "model.p.a", build=1)
    assert poll.event.outcome is NodeState.SUCCESS and poll.cancelled
    assert poll.producer_liveness.lease.generation == held.generation
    assert poll.outcome is None and poll.build.lease is None
