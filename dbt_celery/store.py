"""The status store: every record of a run, kept in the Celery result backend.

Records live under run-scoped keys (``dbt-celery-<run_id>-nodefinished_<unique_id>``)
as zlib-compressed, base64-encoded JSON, one key per record: the producer writes each
node once when dbt finishes it, never a growing blob. The store needs a key-value
backend readable from any process with an atomic set-if-absent: Redis, or the
embedded default's SQLite backend. ``rpc://`` and ``db+`` backends are refused.

Two primitives (:meth:`StatusStore._get_many`, :meth:`StatusStore._set`) and one claim
carry everything; the rest is key naming and encoding.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import sqlite3
import time
import zlib
from typing import Any, Iterable, Mapping

from celery.backends.base import BaseKeyValueStoreBackend
from celery.backends.redis import RedisBackend

from dbt_celery.errors import PayloadError, UnsupportedBackend
from dbt_celery.events import NodeEvent

#: Largest decompressed payload accepted when reading, in bytes.
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
#: Longest dbt message kept in a node record, in characters.
MAX_MESSAGE_CHARS = 16 * 1024
KEY_PREFIX = "dbt-celery-"


def _transient_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, TimeoutError, sqlite3.OperationalError]
    try:
        import redis.exceptions

        errors += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    except ImportError:  # pragma: no cover - redis comes with celery[redis]
        pass
    return tuple(errors)


#: Backend errors that say "try again later", not "the node failed".
TRANSIENT_BACKEND_ERRORS = _transient_errors()


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
class ProducerState:
    """What the producer of a run is doing, with its last heartbeat (epoch seconds)."""

    state: str  # queued | running | finished | failed
    updated_at: float
    heartbeat_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    dbt_success: bool | None = None
    error: str | None = None

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"

    def is_dead(self, heartbeat_timeout: float, now: float | None = None) -> bool:
        """Say whether a running producer stopped beating: its process died or hangs."""
        if self.state != self.RUNNING:
            return False
        last = self.heartbeat_at or self.updated_at
        return (now if now is not None else time.time()) - last > heartbeat_timeout

    def is_terminal(self, heartbeat_timeout: float, now: float | None = None) -> bool:
        """Say whether the producer will report nothing more: finished, failed or dead."""
        return self.state in (self.FINISHED, self.FAILED) or self.is_dead(heartbeat_timeout, now)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ProducerState":
        """Rebuild from :meth:`to_dict` output."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


class StatusStore:
    """Reads and writes a run's records through a Celery result backend."""

    def __init__(self, backend: Any) -> None:
        check_backend(backend)
        self.backend = backend

    # -- primitives ------------------------------------------------------------------
    def _set_many(self, items: Mapping[str, Mapping[str, Any]]) -> None:
        encoded = {key: encode_payload(value) for key, value in items.items()}
        if isinstance(self.backend, RedisBackend):
            # Plain pipelined SETs: the backend's own set() adds a MULTI and a PUBLISH of
            # every value that nobody reads; Celery's retry policy still covers blips.
            self.backend.ensure(self._redis_set_many, (encoded,))
            return
        for key, raw in encoded.items():
            self.backend.set(key, raw)

    def _redis_set_many(self, encoded: Mapping[str, bytes]) -> None:
        with self.backend.client.pipeline(transaction=False) as pipe:
            for key, raw in encoded.items():
                pipe.set(key, raw, ex=self.backend.expires or None)
            pipe.execute()

    def _set(self, key: str, value: Mapping[str, Any]) -> None:
        self._set_many({key: value})

    def _get_many(self, keys: list[str]) -> list[dict[str, Any] | None]:
        if not keys:
            return []
        return [decode_payload(raw) if raw is not None else None for raw in self.backend.mget(keys)]

    def _get(self, key: str) -> dict[str, Any] | None:
        return self._get_many([key])[0]

    def claim(self, run_id: str, what: str) -> bool:
        """Take a one-time claim (``what``) in a run; True for the first caller only."""
        key = self.key(run_id, f"claim_{what}")
        value = encode_payload({"claimed_at": time.time()})
        if hasattr(self.backend, "set_if_absent"):
            return bool(self.backend.set_if_absent(key, value))
        return bool(self.backend.client.set(key, value, nx=True, ex=self.backend.expires or None))

    # -- keys ------------------------------------------------------------------------
    @staticmethod
    def key(run_id: str, kind: str) -> str:
        """The backend key of one record of a run."""
        return f"{KEY_PREFIX}{run_id}-{kind}"

    # -- records ---------------------------------------------------------------------
    def put_node_event(self, run_id: str, event: NodeEvent) -> None:
        """Record the latest dbt result for one node (producer or fallback)."""
        data = event.to_dict()
        if data.get("message") and len(data["message"]) > MAX_MESSAGE_CHARS:
            data["message"] = data["message"][:MAX_MESSAGE_CHARS] + " [truncated]"
        self._set(self.key(run_id, f"nodefinished_{event.unique_id}"), data)

    def node_event(self, run_id: str, unique_id: str) -> NodeEvent | None:
        """The latest dbt result recorded for one node, if any."""
        return _as_event(self._get(self.key(run_id, f"nodefinished_{unique_id}")))

    def node_events(self, run_id: str, unique_ids: Iterable[str]) -> dict[str, NodeEvent]:
        """The recorded dbt results of several nodes (absent ones left out)."""
        ids = list(unique_ids)
        values = self._get_many([self.key(run_id, f"nodefinished_{uid}") for uid in ids])
        return {uid: event for uid, value in zip(ids, values) if (event := _as_event(value)) is not None}

    def poll(
        self, run_id: str, unique_id: str
    ) -> tuple[NodeEvent | None, ProducerState | None, dict[str, Any] | None]:
        """One node's record, the producer's state and the run document: a consumer's poll, one round trip."""
        node, producer, run = self._get_many(
            [self.key(run_id, f"nodefinished_{unique_id}"), self.key(run_id, "producer"), self.key(run_id, "run")]
        )
        return _as_event(node), ProducerState.from_dict(producer) if producer else None, run

    def put_producer_state(self, run_id: str, state: ProducerState) -> None:
        """Record the producer's state (also its heartbeat)."""
        self._set(self.key(run_id, "producer"), state.to_dict())

    def producer_state(self, run_id: str) -> ProducerState | None:
        """The producer's last recorded state."""
        data = self._get(self.key(run_id, "producer"))
        return ProducerState.from_dict(data) if data else None

    def put_document(self, run_id: str, name: str, value: Mapping[str, Any]) -> None:
        """Store a run-level document (``run``, ``plan``) under its name."""
        self._set(self.key(run_id, name), value)

    def put_documents(self, run_id: str, documents: Mapping[str, Mapping[str, Any]]) -> None:
        """Store several run-level documents at once (the plan's per-node entries)."""
        self._set_many({self.key(run_id, name): value for name, value in documents.items()})

    def documents(self, run_id: str, names: Iterable[str]) -> list[dict[str, Any] | None]:
        """Read several run-level documents, in order (None where absent)."""
        return self._get_many([self.key(run_id, name) for name in names])

    def document(self, run_id: str, name: str) -> dict[str, Any] | None:
        """Read a run-level document stored with :meth:`put_document`."""
        return self._get(self.key(run_id, name))

    def put_outcome(self, run_id: str, unique_id: str, outcome: Mapping[str, Any]) -> None:
        """Record a consumer's final outcome for its node."""
        self._set(self.key(run_id, f"outcome_{unique_id}"), outcome)

    def outcomes(self, run_id: str, unique_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The final outcomes recorded so far for several nodes."""
        ids = list(unique_ids)
        values = self._get_many([self.key(run_id, f"outcome_{uid}") for uid in ids])
        return {uid: value for uid, value in zip(ids, values) if value is not None}


def check_backend(backend: Any) -> None:
    """Raise :class:`UnsupportedBackend` unless ``backend`` can serve as the status store."""
    name = type(backend).__name__
    if not isinstance(backend, BaseKeyValueStoreBackend):
        raise UnsupportedBackend(
            f"dbt-celery needs a key-value result backend readable from every process "
            f"(redis://, or the embedded default); {name} cannot serve"
            + (" (rpc:// results are visible only to the process that sent the task)" if "RPC" in name else "")
        )
    if not hasattr(backend, "set_if_absent") and not isinstance(backend, RedisBackend):
        raise UnsupportedBackend(f"{name} offers no atomic set-if-absent, which dbt-celery's claims need")


def _as_event(value: Mapping[str, Any] | None) -> NodeEvent | None:
    if value is None:
        return None
    try:
        return NodeEvent.from_dict(value)
    except (KeyError, TypeError, ValueError) as exc:
        raise PayloadError(f"status payload is not a node record: {exc}") from None
