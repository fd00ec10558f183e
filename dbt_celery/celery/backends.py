"""Where dbt-celery keeps its records for a Celery app: the one place backends are told apart.

By default the records live in the app's own result backend when it can serve (Redis,
or the embedded SQLite file). An app whose result backend cannot (django-celery-results'
``django-db``, ``db+``, ``rpc://``) names a separate store with the setting
``dbt_celery_store_url`` (``redis://...``; Django's ``CELERY_DBT_CELERY_STORE_URL``), and keeps
its backend. ``task_ignore_result=True`` needs nothing: dbt-celery's tasks store their results anyway.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.backends.redis import RedisBackend

from dbt_celery.celery.sqlite_backend import SQLiteBackend
from dbt_celery.core.kv import REDIS_PATIENCE, KeyValue, RedisKV, SQLiteKV, is_transient
from dbt_celery.core.store import StatusStore
from dbt_celery.errors import UnsupportedBackend

__all__ = ["is_transient", "kv_for", "store_for"]

#: The attribute an app keeps its status store in (it lives and dies with the app).
_STORE_ATTRIBUTE = "_dbt_celery_store"


def store_for(app: Celery) -> StatusStore:
    """The status store of an app (one per app, built on first use)."""
    store = getattr(app, _STORE_ATTRIBUTE, None)
    if store is None:
        store = StatusStore(kv_for(app), _seconds(app.conf.result_expires))
        setattr(app, _STORE_ATTRIBUTE, store)
    return store


def kv_for(app: Celery) -> KeyValue:
    """The key-value store behind an app's dbt-celery records."""
    url = app.conf.get("dbt_celery_store_url")
    expires = _seconds(app.conf.result_expires)
    if url:
        if url.startswith(("redis://", "rediss://", "unix://")):
            return RedisKV.from_url(url, expires, _patience(app))
        if url.startswith("sqlite:///"):
            return SQLiteKV(url[len("sqlite:///") :], expires)
        setting = _setting(app, "dbt_celery_store_url")
        raise UnsupportedBackend(f"{setting} must be a redis:// or sqlite:/// URL, not {url!r}")
    try:
        backend = app.backend
    except Exception as exc:  # noqa: BLE001 - e.g. db+ without SQLAlchemy installed
        raise UnsupportedBackend(f"the app's result backend cannot be loaded: {exc}") from None
    if isinstance(backend, SQLiteBackend):
        return backend.kv
    if isinstance(backend, RedisBackend):
        return RedisKV(backend.client, backend.expires, _patience(app))
    raise UnsupportedBackend(_refusal(backend, _setting(app, "dbt_celery_store_url")))


def _setting(app: Celery, name: str) -> str:
    """A setting's name as the app's configuration spells it (Django's ``namespace="CELERY"``: CELERY_...)."""
    if not app.namespace:
        return name
    prefix = app.namespace.rstrip("_") + "_"
    return (prefix + name).upper() if prefix.isupper() else (prefix + name).lower()


def _refusal(backend: Any, setting: str) -> str:
    name = type(backend).__name__
    why = {
        "RPCBackend": "rpc:// results are visible only to the process that sent the task",
        "DisabledBackend": "the app has no result backend",
    }.get(name, "it offers no atomic set-if-absent, which dbt-celery's claims and leases need")
    return (
        f"dbt-celery cannot keep its records in the {name} result backend ({why}). "
        f"Use Redis as the result backend, or keep yours and set {setting} = 'redis://...'"
    )


def _patience(app: Celery) -> float:
    """Seconds a store call rides out an unreachable Redis (``dbt_celery_store_patience``)."""
    return float(app.conf.get("dbt_celery_store_patience") or REDIS_PATIENCE)


def _seconds(value: Any) -> float | None:
    return value.total_seconds() if hasattr(value, "total_seconds") else value
