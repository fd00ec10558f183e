"""A Celery result backend in one SQLite file: the embedded default's result backend.

Celery's own ``file://`` backend rewrites files in place, so a reader can see a
half-written value. This backend keeps Celery's task results in the same
:class:`~dbt_celery.core.kv.SQLiteKV` file that holds dbt-celery's records (atomic
writes, an atomic ``set_if``). Use it with the URL
``dbt_celery.celery.sqlite_backend:SQLiteBackend+sqlite:///<absolute path>``.
"""

from __future__ import annotations

from typing import Any, Iterable

from celery.backends.base import KeyValueStoreBackend
from kombu.utils.encoding import bytes_to_str

from dbt_celery.core.kv import SQLiteKV


class SQLiteBackend(KeyValueStoreBackend):
    """Key-value result backend over a local SQLite database, safe across processes."""

    supports_autoexpire = True

    def __init__(self, url: str | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, url=url, **kwargs)
        if not url or not url.startswith("sqlite:///"):
            raise ValueError(f"SQLiteBackend needs a URL like sqlite:////abs/path.sqlite, got {url!r}")
        self.kv = SQLiteKV(url[len("sqlite:///") :], self.expires)

    def get(self, key: bytes | str) -> bytes | None:
        """Return the value stored under ``key``, or None."""
        return self.kv.get_many([bytes_to_str(key)])[0]

    def mget(self, keys: Iterable[bytes | str]) -> list[bytes | None]:
        """Return the values of several keys, in order (None where absent)."""
        return self.kv.get_many([bytes_to_str(key) for key in keys])

    def set(self, key: bytes | str, value: bytes | str) -> None:
        """Store ``value`` under ``key``, replacing what was there."""
        self.kv.set_many({bytes_to_str(key): _as_bytes(value)})

    def delete(self, key: bytes | str) -> None:
        """Remove ``key``."""
        self.kv.delete([bytes_to_str(key)])

    def incr(self, key: bytes | str) -> int:
        """Atomically add one to an integer value (used by Celery's chords)."""
        name = bytes_to_str(key)
        while True:
            current = self.kv.get_many([name])[0]
            value = str(int(current or 0) + 1).encode()
            if self.kv.set_if({name: current}, {name: value}):
                return int(value)

    def expire(self, key: bytes | str, value: float) -> None:
        """Make ``key`` expire ``value`` seconds from now."""
        self.kv.expire(bytes_to_str(key), float(value))

    def cleanup(self) -> None:
        """Drop expired values (called by ``celery.backend_cleanup``)."""
        self.kv.cleanup()


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
