"""The status store: every record of a run, under run-scoped keys, as compressed JSON.

Records live under ``dbt-celery-<run_id>-<kind>`` as base64 of zlib-compressed JSON,
one key per record: the producer writes each node once when dbt finishes it (batched,
never a growing blob). The store speaks typed records (:mod:`dbt_celery.core.records`)
and sits on a :class:`~dbt_celery.core.kv.KeyValue`.

Writers that build (the producer, a resumed producer, an inline build) hold a
:class:`HeldLease`; their writes are *fenced*: stored only while that lease is the
current one, so a writer that stalled and lost its lease can no longer write.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import time
import zlib
from typing import Any, Iterable, Mapping, Sequence

from dbt_celery.core.kv import KeyValue, set_if_absent
from dbt_celery.core.records import (
    Lease,
    Liveness,
    NodeEvent,
    NodeOutcome,
    ProducerState,
    RunDocument,
)
from dbt_celery.errors import PayloadError

#: Largest decompressed payload accepted when reading, in bytes.
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
#: Largest decompressed dbt artifact (a big project's manifest.json) accepted when reading, in bytes.
MAX_ARTIFACT_BYTES = 512 * 1024 * 1024
#: Longest dbt message kept in a node record, in characters.
MAX_MESSAGE_CHARS = 16 * 1024
KEY_PREFIX = "dbt-celery-"
#: The producer's lease (one per run); inline builds take ``build_<unique_id>_<n>``.
PRODUCER_LEASE = "producer_lease"
#: The name a run's watchdog leaves its "still alive" mark under.
WATCHDOG = "__watchdog__"
#: The claim (plus a node's id) a consumer takes when it ends its task as its node's outcome says.
REPORT_CLAIM = "report_"


def encode_payload(value: Mapping[str, Any]) -> bytes:
    """Encode a JSON object as base64 of its zlib-compressed UTF-8 text."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    return base64.b64encode(zlib.compress(text, 6))


def decode_payload(raw: bytes | str, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    """Decode :func:`encode_payload` output, refusing anything corrupt, oversized or not an object."""
    try:
        compressed = base64.b64decode(raw, validate=True)
        inflater = zlib.decompressobj()
        text = inflater.decompress(compressed, max_bytes)
        if inflater.unconsumed_tail:
            raise PayloadError(f"status payload is larger than {max_bytes} bytes once decompressed")
        if not inflater.eof:
            raise PayloadError("status payload is truncated")
        value = json.loads(text)
    except PayloadError:
        raise
    except (binascii.Error, zlib.error, ValueError, TypeError) as exc:
        raise PayloadError(f"status payload is not compressed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise PayloadError(f"status payload is a {type(value).__name__}, expected a JSON object")
    return value


@dataclasses.dataclass(frozen=True)
class HeldLease:
    """A lease this process holds: the exact stored value its fenced writes compare."""

    run_id: str
    name: str
    lease: Lease
    raw: bytes

    @property
    def generation(self) -> int:
        """The lease's generation number."""
        return self.lease.generation


@dataclasses.dataclass(frozen=True)
class Poll:
    """Everything one consumer poll reads, in one round trip."""

    run: RunDocument | None
    event: NodeEvent | None
    producer: ProducerState | None
    producer_liveness: Liveness
    outcome: NodeOutcome | None
    cancelled: bool
    build: Liveness
    watchdog_seen_at: float | None = None
    #: Whether a delivery of this consumer already ended its task as its outcome says.
    reported: bool = False


class StatusStore:
    """Reads and writes a run's records on a key-value store."""

    def __init__(self, kv: KeyValue, expires: float | None = None) -> None:
        self.kv = kv
        #: Seconds the store keeps a run's records (None: for good); workspaces are kept as long.
        self.kv_expires = expires

    # -- keys and encoding -----------------------------------------------------------
    @staticmethod
    def key(run_id: str, kind: str) -> str:
        """The key of one record of a run."""
        return f"{KEY_PREFIX}{run_id}-{kind}"

    def _read(
        self, run_id: str, kinds: Sequence[str], max_bytes: int = MAX_PAYLOAD_BYTES
    ) -> list[dict[str, Any] | None]:
        raws = self.kv.get_many([self.key(run_id, kind) for kind in kinds])
        return [decode_payload(raw, max_bytes=max_bytes) if raw is not None else None for raw in raws]

    def _items(self, run_id: str, values: Mapping[str, Mapping[str, Any]]) -> dict[str, bytes]:
        return {self.key(run_id, kind): encode_payload(value) for kind, value in values.items()}

    def _write(self, run_id: str, values: Mapping[str, Mapping[str, Any]], lease: HeldLease | None = None) -> bool:
        items = self._items(run_id, values)
        if lease is None:
            self.kv.set_many(items)
            return True
        return self.kv.set_if({self.key(lease.run_id, lease.name): lease.raw}, items)

    # -- the run -----------------------------------------------------------------------
    def put_run(self, run_id: str, document: RunDocument) -> None:
        """Record what was submitted."""
        self._write(run_id, {"run": document.to_dict()})

    def run(self, run_id: str) -> RunDocument | None:
        """What was submitted, if this store knows the run."""
        (data,) = self._read(run_id, ["run"])
        return RunDocument.from_dict(data) if data else None

    def cancel(self, run_id: str, reason: str) -> bool:
        """Ask the run to stop; True for the first request."""
        return set_if_absent(self.kv, self.key(run_id, "cancel"), encode_payload({"reason": reason, "at": time.time()}))

    def cancelled(self, run_id: str) -> str | None:
        """Why the run was cancelled, if it was."""
        (data,) = self._read(run_id, ["cancel"])
        return str(data.get("reason") or "cancelled") if data else None

    def claim(self, run_id: str, what: str) -> bool:
        """Take a one-time claim (``what``) in a run; True for the first caller only."""
        return bool(self.claim_many(run_id, [what]))

    def claim_many(self, run_id: str, whats: Sequence[str]) -> list[str]:
        """Take several one-time claims at once (one round trip); return those this caller took."""
        value = encode_payload({"at": time.time()})
        taken = self.kv.add_many({self.key(run_id, f"claim_{what}"): value for what in whats})
        return [what for what, took in zip(whats, taken) if took]

    def claim_report(self, run_id: str, unique_id: str) -> bool:
        """Take the right to end a node's consumer task as its outcome says (once per node)."""
        return self.claim(run_id, f"{REPORT_CLAIM}{unique_id}")

    def claims(self, run_id: str, whats: Sequence[str]) -> dict[str, float]:
        """When each of some claims was taken (claims not taken are left out)."""
        values = self._read(run_id, [f"claim_{what}" for what in whats])
        return {what: float(value["at"]) for what, value in zip(whats, values) if value is not None}

    # -- the producer ----------------------------------------------------------------
    def put_producer(self, run_id: str, state: ProducerState, lease: HeldLease | None = None) -> bool:
        """Record the producer's state (fenced by its lease once it holds one)."""
        return self._write(run_id, {"producer": state.to_dict()}, lease)

    def producer(self, run_id: str) -> ProducerState | None:
        """The producer's last recorded state."""
        (data,) = self._read(run_id, ["producer"])
        return ProducerState.from_dict(data) if data else None

    # -- node records ----------------------------------------------------------------
    def put_events(
        self,
        run_id: str,
        events: Iterable[NodeEvent],
        lease: HeldLease | None = None,
        rebuilt_results: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> bool:
        """Record dbt's results for some nodes in one write; False if ``lease`` was lost.

        ``rebuilt_results`` are the run_results entries of nodes an inline build rebuilt,
        stored with their events so the run's artifacts carry the rebuild.
        """
        values = {f"nodefinished_{event.unique_id}": _trimmed(event) for event in events}
        values.update({f"rebuilt_result_{uid}": dict(result) for uid, result in (rebuilt_results or {}).items()})
        return self._write(run_id, values, lease) if values else True

    def node_events(self, run_id: str, unique_ids: Iterable[str]) -> dict[str, NodeEvent]:
        """The recorded dbt results of several nodes (absent ones left out)."""
        ids = list(unique_ids)
        values = self._read(run_id, [f"nodefinished_{uid}" for uid in ids])
        return {uid: NodeEvent.from_dict(value) for uid, value in zip(ids, values) if value is not None}

    def node_event(self, run_id: str, unique_id: str) -> NodeEvent | None:
        """The recorded dbt result of one node."""
        return self.node_events(run_id, [unique_id]).get(unique_id)

    def put_outcome(self, run_id: str, unique_id: str, outcome: NodeOutcome) -> bool:
        """Record a node's final outcome; only the first one counts (True if this was it)."""
        key = self.key(run_id, f"outcome_{unique_id}")
        return set_if_absent(self.kv, key, encode_payload(outcome.to_dict()))

    def resolve(self, run_id: str, unique_id: str, outcome: NodeOutcome) -> bool:
        """Record a node's outcome and take the right to report it, both or neither (True: this caller did).

        What a consumer ending its own node does: one atomic write instead of
        :meth:`put_outcome` then :meth:`claim_report`.
        """
        outcome_key = self.key(run_id, f"outcome_{unique_id}")
        report_key = self.key(run_id, f"claim_{REPORT_CLAIM}{unique_id}")
        items = {outcome_key: encode_payload(outcome.to_dict()), report_key: encode_payload({"at": time.time()})}
        return self.kv.set_if(dict.fromkeys(items), items)

    def outcomes(self, run_id: str, unique_ids: Iterable[str]) -> dict[str, NodeOutcome]:
        """The final outcomes recorded so far for several nodes."""
        ids = list(unique_ids)
        values = self._read(run_id, [f"outcome_{uid}" for uid in ids])
        return {uid: NodeOutcome.from_dict(value) for uid, value in zip(ids, values) if value is not None}

    def put_documents(
        self, run_id: str, documents: Mapping[str, Mapping[str, Any]], lease: HeldLease | None = None
    ) -> bool:
        """Store run-level documents (the plan and its node entries) under their names."""
        return self._write(run_id, documents, lease)

    def documents(self, run_id: str, names: Sequence[str]) -> list[dict[str, Any] | None]:
        """Read run-level documents, in order (None where absent)."""
        return self._read(run_id, names)

    # -- dbt's artifacts -----------------------------------------------------------------
    def put_build_artifacts(
        self, run_id: str, lease: HeldLease, run_results: Mapping[str, Any] | None, manifest: Mapping[str, Any] | None
    ) -> bool:
        """Store what one producer generation's dbt wrote (fenced by its lease)."""
        values: dict[str, Mapping[str, Any]] = {}
        if run_results is not None:
            values[f"artifact_run_results_{lease.generation}"] = run_results
        if manifest is not None:
            values["artifact_manifest"] = manifest
        return self._write(run_id, values, lease) if values else True

    def build_artifacts(
        self, run_id: str, generations: int, unique_ids: Sequence[str]
    ) -> tuple[list[dict[str, Any] | None], dict[str, dict[str, Any]], dict[str, Any] | None]:
        """Each producer generation's run_results, the inline rebuilds' results, and the manifest."""
        kinds = [f"artifact_run_results_{n}" for n in range(1, generations + 1)] + ["artifact_manifest"]
        *builds, manifest = self._read(run_id, kinds, max_bytes=MAX_ARTIFACT_BYTES)
        rebuilt = self._read(run_id, [f"rebuilt_result_{uid}" for uid in unique_ids])
        return builds, {uid: result for uid, result in zip(unique_ids, rebuilt) if result is not None}, manifest

    def mark_seen(self, run_id: str, unique_id: str, headers: Mapping[str, Any]) -> None:
        """Note that a consumer is alive, with the headers a re-sent copy should carry."""
        self._write(run_id, {f"seen_{unique_id}": {"at": time.time(), "headers": dict(headers)}})

    def seen(self, run_id: str, unique_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The last sign of life of several consumers."""
        values = self._read(run_id, [f"seen_{uid}" for uid in unique_ids])
        return {uid: value for uid, value in zip(unique_ids, values) if value is not None}

    # -- a consumer's poll -------------------------------------------------------------
    def poll(self, run_id: str, unique_id: str, build: int) -> Poll:
        """One node's record, outcome and build lease, the producer, the run and its cancel flag."""
        build_lease = _build_lease(unique_id, build)
        kinds = [
            "run", f"nodefinished_{unique_id}", "producer", PRODUCER_LEASE, f"{PRODUCER_LEASE}_renewed",
            f"outcome_{unique_id}", "cancel", build_lease, f"{build_lease}_renewed", f"seen_{WATCHDOG}",
            f"claim_{REPORT_CLAIM}{unique_id}",
        ]  # fmt: skip
        run, event, producer, lease, renewed, outcome, cancel, build_held, build_renewed, watchdog, reported = (
            self._read(run_id, kinds)
        )
        return Poll(
            run=RunDocument.from_dict(run) if run else None,
            event=NodeEvent.from_dict(event) if event else None,
            producer=ProducerState.from_dict(producer) if producer else None,
            producer_liveness=_liveness(lease, renewed),
            outcome=NodeOutcome.from_dict(outcome) if outcome else None,
            cancelled=cancel is not None,
            build=_liveness(build_held, build_renewed),
            watchdog_seen_at=float(watchdog["at"]) if watchdog else None,
            reported=reported is not None,
        )

    # -- leases ------------------------------------------------------------------------
    def acquire(self, run_id: str, name: str, holder: str, ttl: float, *, now: float | None = None) -> HeldLease | None:
        """Take a lease unless a live holder has it; the new generation is one more than the last."""
        now = time.time() if now is None else now
        lease_key, renewed_key = self.key(run_id, name), self.key(run_id, f"{name}_renewed")
        current_raw, renewed_raw = self.kv.get_many([lease_key, renewed_key])
        current = _liveness(_decoded(current_raw), _decoded(renewed_raw))
        if current.alive(now) or (current.lease is not None and current.lease.done):
            return None  # a live holder, or work that is over for good
        generation = (current.lease.generation if current.lease else 0) + 1
        lease = Lease(generation, holder, ttl)
        raw = encode_payload(lease.to_dict())
        taken = self.kv.set_if(
            {lease_key: current_raw, renewed_key: renewed_raw},
            {lease_key: raw, renewed_key: encode_payload({"at": now})},
        )
        return HeldLease(run_id, name, lease, raw) if taken else None

    def renew(self, held: HeldLease, *, now: float | None = None) -> bool:
        """Renew a lease; False once another holder took it."""
        at = time.time() if now is None else now
        return self._write(held.run_id, {f"{held.name}_renewed": {"at": at}}, held)

    def release(self, held: HeldLease) -> bool:
        """Give a lease up for good (``done``): nobody needs to take it over."""
        done = encode_payload(held.lease.replace(done=True).to_dict())
        return self.kv.set_if({self.key(held.run_id, held.name): held.raw}, {self.key(held.run_id, held.name): done})

    def liveness(self, run_id: str, name: str) -> Liveness:
        """A lease and its last renewal."""
        lease, renewed = self._read(run_id, [name, f"{name}_renewed"])
        return _liveness(lease, renewed)

    def build_lease(self, run_id: str, unique_id: str, build: int, holder: str, ttl: float) -> HeldLease | None:
        """Take the lease of one inline build of a node (build number ``build``)."""
        return self.acquire(run_id, _build_lease(unique_id, build), holder, ttl)


def _build_lease(unique_id: str, build: int) -> str:
    return f"build_{unique_id}_{build}"


def _decoded(raw: bytes | None) -> dict[str, Any] | None:
    return decode_payload(raw) if raw is not None else None


def _liveness(lease: Mapping[str, Any] | None, renewed: Mapping[str, Any] | None) -> Liveness:
    return Liveness(Lease.from_dict(lease) if lease else None, float(renewed["at"]) if renewed else None)


def _trimmed(event: NodeEvent) -> dict[str, Any]:
    data = event.to_dict()
    if data.get("message") and len(data["message"]) > MAX_MESSAGE_CHARS:
        data["message"] = data["message"][:MAX_MESSAGE_CHARS] + " [truncated]"
    return data
