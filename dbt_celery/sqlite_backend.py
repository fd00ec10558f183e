"""A Celery result backend in one SQLite file: the embedded default's status store.

Celery's own ``file://`` backend rewrites files in place, so a reader can see a
half-written value; SQLite gives atomic writes and an atomic set-if-absent, which
the status store needs for claims. Use it with the URL
``dbt_celery.sqlite_backend:SQLiteBackend+sqlite:///<absolute path>``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from celery.backends.base import KeyValueStoreBackend
from kombu.utils.encoding import bytes_to_str

_SCHEMA = "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL)"


class SQLiteBackend(KeyValueStoreBackend):
    """Key-value result backend over a local SQLite database, safe across processes."""

    supports_autoexpire = True

    def __init__(self, url: str | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, url=url, **kwargs)
        if not url or not url.startswith("sqlite:///"):
            raise ValueError(f"SQLiteBackend needs a URL like sqlite:////abs/path.sqlite, got {url!r}")
        self.path = Path(url[len("sqlite:///") :])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(_SCHEMA)
            self._local.connection = connection
        return connection

    def _expiry(self) -> float | None:
        return time.time() + self.expires if self.expires else None

    def get(self, key: bytes | str) -> bytes | None:
        """Return the value stored under ``key``, or None."""
        row = self._connection().execute(
            "SELECT value FROM kv WHERE key = ? AND (expires IS NULL OR expires > ?)", (bytes_to_str(key), time.time())
        ).fetchone()
        return row[0] if row else None

    def mget(self, keys: Iterable[bytes | str]) -> list[bytes | None]:
        """Return the values of several keys, in order (None where absent)."""
        names = [bytes_to_str(key) for key in keys]
        found: dict[str, bytes] = {}
        for start in range(0, len(names), 500):
            chunk = names[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._connection().execute(
                f"SELECT key, value FROM kv WHERE key IN ({marks}) AND (expires IS NULL OR expires > ?)",
                (*chunk, time.time()),
            )
            found.update(rows.fetchall())
        return [found.get(name) for name in names]

    def set(self, key: bytes | str, value: bytes | str) -> None:
        """Store ``value`` under ``key``, replacing what was there."""
        self._connection().execute(
            "INSERT OR REPLACE INTO kv (key, value, expires) VALUES (?, ?, ?)",
            (bytes_to_str(key), _as_bytes(value), self._expiry()),
        )

    def set_if_absent(self, key: bytes | str, value: bytes | str) -> bool:
        """Store ``value`` only if ``key`` holds nothing; say whether it was stored."""
        connection = self._connection()
        connection.execute("DELETE FROM kv WHERE key = ? AND expires <= ?", (bytes_to_str(key), time.time()))
        cursor = connection.execute(
            "INSERT OR IGNORE INTO kv (key, value, expires) VALUES (?, ?, ?)",
            (bytes_to_str(key), _as_bytes(value), self._expiry()),
        )
        return cursor.rowcount == 1

    def delete(self, key: bytes | str) -> None:
        """Remove ``key``."""
        self._connection().execute("DELETE FROM kv WHERE key = ?", (bytes_to_str(key),))

    def incr(self, key: bytes | str) -> int:
        """Atomically add one to an integer value (used by Celery's chords)."""
        connection = self._connection()
        with connection:
            connection.execute("BEGIN IMMEDIATE")
            current = int(self.get(key) or 0) + 1
            self.set(key, str(current))
        return current

    def expire(self, key: bytes | str, value: float) -> None:
        """Make ``key`` expire ``value`` seconds from now."""
        self._connection().execute(
            "UPDATE kv SET expires = ? WHERE key = ?", (time.time() + float(value), bytes_to_str(key))
        )

    def cleanup(self) -> None:
        """Drop expired values (called by ``celery.backend_cleanup``)."""
        self._connection().execute("DELETE FROM kv WHERE expires IS NOT NULL AND expires <= ?", (time.time(),))


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
