"""The key-value protocol under the status store, and its three adapters.

Three primitives carry every record: read many keys, write many keys, and write many
keys *only if* some keys still hold what the caller last read (``set_if``). The last
one gives set-if-absent (claims), compare-and-set, and fenced writes (a record written
only while its writer's lease is current) in one atomic step.

* :class:`RedisKV` — a Lua script makes ``set_if`` atomic on the server.
* :class:`SQLiteKV` — one SQLite file (the embedded default); ``set_if`` is a transaction.
* :class:`MemoryKV` — a dict behind a lock, for unit tests.

Values are bytes; an empty value never occurs (payloads are base64 text).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence, TypeVar

from dbt_celery.errors import StoreUnavailable, UnsupportedBackend

log = logging.getLogger(__name__)

#: Seconds a Redis call keeps retrying a server that cannot be reached (a restart, a failover).
REDIS_PATIENCE = 30.0

_T = TypeVar("_T")


class KeyValue(Protocol):
    """What the status store needs from a storage backend."""

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of ``keys``, in order (None where absent)."""

    def set_many(self, items: Mapping[str, bytes]) -> None:
        """Write every item."""

    def set_if(self, guards: Mapping[str, bytes | None], items: Mapping[str, bytes]) -> bool:
        """Write ``items`` only if each guard key holds its value (None: absent); say whether it wrote."""

    def add_many(self, items: Mapping[str, bytes]) -> list[bool]:
        """Write each item whose key is absent (each one on its own); say, in order, which were written."""


def set_if_absent(kv: KeyValue, key: str, value: bytes) -> bool:
    """Write ``value`` under ``key`` only if nothing is there: a one-time claim."""
    return kv.set_if({key: None}, {key: value})


def compare_and_set(kv: KeyValue, key: str, expected: bytes | None, value: bytes) -> bool:
    """Replace what ``key`` holds only if it still holds ``expected``."""
    return kv.set_if({key: expected}, {key: value})


class MemoryKV:
    """An in-process store for tests: a dict behind a lock."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of ``keys``, in order."""
        with self._lock:
            return [self.data.get(key) for key in keys]

    def set_many(self, items: Mapping[str, bytes]) -> None:
        """Write every item."""
        with self._lock:
            self.data.update(items)

    def set_if(self, guards: Mapping[str, bytes | None], items: Mapping[str, bytes]) -> bool:
        """Write ``items`` if every guard holds; atomic under the lock."""
        with self._lock:
            if any(self.data.get(key) != value for key, value in guards.items()):
                return False
            self.data.update(items)
            return True

    def add_many(self, items: Mapping[str, bytes]) -> list[bool]:
        """Write each absent item; atomic under the lock."""
        with self._lock:
            added = [key not in self.data for key in items]
            self.data.update({key: value for (key, value), new in zip(items.items(), added) if new})
            return added


# KEYS: the guard keys, then the item keys. ARGV: number of guards, ttl (0: none),
# the guards' expected values ("" for absent), then the items' values.
_SET_IF_SCRIPT = """
local guards = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
for i = 1, guards do
  local current = redis.call('GET', KEYS[i])
  local expected = ARGV[2 + i]
  if expected == '' then
    if current then return 0 end
  elseif current ~= expected then
    return 0
  end
end
for i = guards + 1, #KEYS do
  if ttl > 0 then
    redis.call('SET', KEYS[i], ARGV[2 + i], 'EX', ttl)
  else
    redis.call('SET', KEYS[i], ARGV[2 + i])
  end
end
return 1
"""


def is_transient(exc: BaseException) -> bool:
    """Whether a store error says "try again later" rather than "this cannot work"."""
    import redis.exceptions

    if isinstance(exc, (StoreUnavailable, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return True
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return isinstance(exc, sqlite3.OperationalError) and any(word in str(exc) for word in ("locked", "busy"))


class RedisKV:
    """The store on Redis: plain pipelined SETs and a Lua script for ``set_if``.

    Every call rides out a server that is briefly unreachable (restarting, loading its
    data) for ``patience`` seconds, then raises :class:`~dbt_celery.errors.StoreUnavailable`.
    """

    def __init__(self, client: Any, expires: float | None = None, patience: float = REDIS_PATIENCE) -> None:
        self.client = client
        self.ttl = int(expires or 0)
        self.patience = patience
        self._set_if = client.register_script(_SET_IF_SCRIPT)

    def _patiently(self, call: Callable[[], _T]) -> _T:
        give_up, delay = time.monotonic() + self.patience, 0.2
        while True:
            try:
                return call()
            except Exception as exc:  # noqa: BLE001 - only what is_transient accepts is retried
                if not is_transient(exc):
                    raise
                if time.monotonic() > give_up:
                    raise StoreUnavailable(f"Redis unreachable for {self.patience:.0f} s: {exc}") from None
                log.warning("Redis unreachable (%s); retrying", exc)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    @classmethod
    def from_url(cls, url: str, expires: float | None = None, patience: float = REDIS_PATIENCE) -> RedisKV:
        """Connect to the Redis at ``url``."""
        import redis

        return cls(redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5), expires, patience)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of ``keys``, in order (one MGET)."""
        return self._patiently(lambda: list(self.client.mget(keys))) if keys else []

    def set_many(self, items: Mapping[str, bytes]) -> None:
        """Write every item in one pipelined round trip."""
        if items:
            self._patiently(lambda: self._pipelined_set(items))

    def _pipelined_set(self, items: Mapping[str, bytes]) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            for key, value in items.items():
                pipe.set(key, value, ex=self.ttl or None)
            pipe.execute()

    def set_if(self, guards: Mapping[str, bytes | None], items: Mapping[str, bytes]) -> bool:
        """Write ``items`` if every guard holds, atomically on the server."""
        keys = [*guards, *items]
        args = [len(guards), self.ttl, *(value or b"" for value in guards.values()), *items.values()]
        # A retried set_if that did land the first time answers False the second time; the
        # callers treat False as "someone else holds it", which then shows up on the next read.
        return bool(self._patiently(lambda: self._set_if(keys=keys, args=args)))

    def add_many(self, items: Mapping[str, bytes]) -> list[bool]:
        """``SET … NX`` for each item, pipelined in one round trip."""
        return self._patiently(lambda: self._pipelined_add(items)) if items else []

    def _pipelined_add(self, items: Mapping[str, bytes]) -> list[bool]:
        with self.client.pipeline(transaction=False) as pipe:
            for key, value in items.items():
                pipe.set(key, value, ex=self.ttl or None, nx=True)
            return [bool(written) for written in pipe.execute()]


_SCHEMA = "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL)"
_CHUNK = 500  # SQLite's limit on bound parameters is far above; keeps statements short


class SQLiteKV:
    """The store in one SQLite file, safe across processes (WAL, one transaction per write)."""

    def __init__(self, path: str | Path, expires: float | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.expires = expires
        self._local = threading.local()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (SQLite connections are not shared across threads)."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            for statement in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", _SCHEMA):
                _setup(connection, statement)
            self._local.connection = connection
        return connection

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of ``keys``, in order."""
        found: dict[str, bytes] = {}
        now = time.time()
        for start in range(0, len(keys), _CHUNK):
            chunk = list(keys[start : start + _CHUNK])
            marks = ",".join("?" * len(chunk))
            rows = self.connection().execute(
                f"SELECT key, value FROM kv WHERE key IN ({marks}) AND (expires IS NULL OR expires > ?)", (*chunk, now)
            )
            found.update(rows.fetchall())
        return [found.get(key) for key in keys]

    def set_many(self, items: Mapping[str, bytes]) -> None:
        """Write every item in one transaction."""
        with self._transaction() as connection:
            self._write(connection, items)

    def set_if(self, guards: Mapping[str, bytes | None], items: Mapping[str, bytes]) -> bool:
        """Write ``items`` if every guard holds, in one immediate transaction."""
        with self._transaction() as connection:
            if self.get_many(list(guards)) != list(guards.values()):
                return False
            self._write(connection, items)
            return True

    def add_many(self, items: Mapping[str, bytes]) -> list[bool]:
        """Write each absent item, in one immediate transaction."""
        with self._transaction() as connection:
            present = self.get_many(list(items))
            added = {key: value for (key, value), current in zip(items.items(), present) if current is None}
            self._write(connection, added)
            return [current is None for current in present]

    def delete(self, keys: Iterable[str]) -> None:
        """Remove keys."""
        with self._transaction() as connection:
            connection.executemany("DELETE FROM kv WHERE key = ?", [(key,) for key in keys])

    def expire(self, key: str, seconds: float) -> None:
        """Make ``key`` expire ``seconds`` from now."""
        self.connection().execute("UPDATE kv SET expires = ? WHERE key = ?", (time.time() + seconds, key))

    def cleanup(self) -> None:
        """Drop expired values."""
        self.connection().execute("DELETE FROM kv WHERE expires IS NOT NULL AND expires <= ?", (time.time(),))

    def _write(self, connection: sqlite3.Connection, items: Mapping[str, bytes]) -> None:
        expires = time.time() + self.expires if self.expires else None
        connection.executemany(
            "INSERT OR REPLACE INTO kv (key, value, expires) VALUES (?, ?, ?)",
            [(key, value, expires) for key, value in items.items()],
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self.connection())


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK`` on error) on one connection.

    A store that can never be written (a read-only file or mount, a full disk) is an
    :class:`~dbt_celery.errors.UnsupportedBackend`, not an error to retry forever.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> sqlite3.Connection:
        self._run("BEGIN IMMEDIATE")
        return self.connection

    def __exit__(self, kind: object, value: object, trace: object) -> None:
        if kind is None:
            self._run("COMMIT")
            return
        self.connection.execute("ROLLBACK")
        if isinstance(value, sqlite3.Error) and _is_permanent(value):
            raise UnsupportedBackend(f"the status store cannot be written: {value}") from value

    def _run(self, statement: str) -> None:
        try:
            self.connection.execute(statement)
        except sqlite3.Error as exc:
            if _is_permanent(exc):
                raise UnsupportedBackend(f"the status store cannot be written: {exc}") from exc
            raise


def _setup(connection: sqlite3.Connection, statement: str, attempts: int = 100) -> None:
    """Run a set-up statement, waiting out other connections doing the same on a new file.

    Switching a new file to WAL takes a lock SQLite does not wait for (no busy handler),
    so connections opened at the same moment can meet "database is locked" there.
    """
    for attempt in range(attempts):
        try:
            connection.execute(statement)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


def _is_permanent(exc: sqlite3.Error) -> bool:
    return any(words in str(exc) for words in ("readonly", "read-only", "disk is full", "malformed"))
