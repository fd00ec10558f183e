"""Celery settings for dbt-celery, from the environment, and the standalone app.

Inside a user's own Celery app (Django, Flask) nothing here is needed: the tasks are
``shared_task``s, so adding ``dbt_celery.tasks`` to the app's imports registers them,
and queues default to the app's default queue unless ``dbt_celery_*_queue`` settings
name others. The standalone app (``celery -A dbt_celery worker``) reads
``celeryconfig.py`` when it is importable, else the environment; with no broker
configured at all it uses the embedded default: a file-based broker and a SQLite
result store under a state directory, nothing to start.
"""

from __future__ import annotations

import importlib
import os
import types
from pathlib import Path
from typing import Any, Mapping

from celery import Celery
from kombu import Queue

from dbt_celery.celery.queues import CONSUMER_QUEUE, CONTROL_QUEUE, FALLBACK_QUEUE, PRODUCER_QUEUE, declared
from dbt_celery.errors import ConfigurationError

#: Seconds a Redis broker waits for an unacknowledged message before giving it to another
#: worker. Far above every countdown dbt-celery uses (polls ≤ poll_max, the watchdog's
#: 15 s), so nothing is delivered twice in normal work; a message held by a killed worker
#: comes back after it, and the watchdog re-sends a lost consumer sooner (``rearm_after``).
REDIS_VISIBILITY_TIMEOUT = 900
#: dbt-celery's queues by kind, and their names unless ``DBT_CELERY_<KIND>_QUEUE`` says otherwise.
_QUEUES = {
    "producer": PRODUCER_QUEUE,
    "consumer": CONSUMER_QUEUE,
    "fallback": FALLBACK_QUEUE,
    "control": CONTROL_QUEUE,
}
#: RabbitMQ queue types dbt-celery's queues can be declared as (``CELERY_TASK_DEFAULT_QUEUE_TYPE``).
QUEUE_TYPES = ("classic", "quorum")
#: The embedded default's broker: kombu's filesystem transport with atomic writes.
FILE_TRANSPORT = "dbt_celery.celery.file_broker:Transport"

_DEFAULTS = {
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "result_accept_content": ["json"],
    "event_serializer": "json",
    # Celery's task-sent event carries the real task name, not the shadow name, and
    # Flower would then label a node's consumer "dbt_celery.consume" instead of its node.
    "task_send_sent_event": False,
    "worker_send_task_events": True,
    "result_extended": False,
    "broker_connection_retry_on_startup": True,
    # RabbitMQ closes a channel whose message stayed unacknowledged past consumer_timeout
    # (a countdown held behind a long build); reconnect instead of letting the worker exit.
    "broker_channel_error_retry": True,
}


def state_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The embedded default's folder (``DBT_CELERY_STATE_DIR``, else ~/.cache/dbt-celery)."""
    default = Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dbt-celery"
    return Path(environ.get("DBT_CELERY_STATE_DIR") or default)


def settings_from_env(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Celery settings from ``CELERY_BROKER_URL``, ``CELERY_RESULT_BACKEND`` and queue variables."""
    broker = environ.get("CELERY_BROKER_URL") or None
    backend = environ.get("CELERY_RESULT_BACKEND") or (broker if broker and broker.startswith("redis") else None)
    queues = {kind: environ.get(f"DBT_CELERY_{kind.upper()}_QUEUE", default) for kind, default in _QUEUES.items()}
    queue_type = environ.get("CELERY_TASK_DEFAULT_QUEUE_TYPE") or "classic"
    if queue_type not in QUEUE_TYPES:
        raise ConfigurationError(f"CELERY_TASK_DEFAULT_QUEUE_TYPE must be one of {QUEUE_TYPES}, not {queue_type!r}")
    return {
        **_DEFAULTS,
        "broker_url": broker,
        "result_backend": backend,
        **{f"dbt_celery_{kind}_queue": name for kind, name in queues.items()},
        # A plain `celery -A dbt_celery worker` (no -Q) consumes every one of them.
        "task_queues": typed(declared(list(queues.values())), queue_type),
        "task_default_queue_type": queue_type,
        "dbt_celery_store_patience": float(environ.get("DBT_CELERY_STORE_PATIENCE") or 30),
        # A beat entry or send_task() of start_run is recorded at once, even while a build
        # keeps the producer worker busy: the light control queue is the consumer worker's.
        "task_routes": {"dbt_celery.start_run": {"queue": queues["control"]}},
        **(
            {"broker_transport_options": {"visibility_timeout": REDIS_VISIBILITY_TIMEOUT}}
            if broker and broker.startswith("redis")
            else {}
        ),
    }


def typed(queues: list[Queue], queue_type: str) -> list[Queue]:
    """The queues declared as RabbitMQ ``queue_type`` queues (``quorum``: replicated, for a cluster).

    Their exchanges stay direct, which keeps countdowns off Celery's native delayed delivery
    (which dbt-celery's consumer cannot use, see docs/rabbitmq.md): a quorum queue's countdown
    messages are held by the worker, so its prefetch must hold them.
    """
    if queue_type == "classic":
        return queues
    return [
        Queue(q.name, q.exchange, routing_key=q.routing_key, queue_arguments={"x-queue-type": queue_type})
        for q in queues
    ]


def embedded_settings(root: Path, broker_dir: Path | None = None) -> dict[str, Any]:
    """Settings of the embedded default: a filesystem broker and a SQLite result store."""
    broker_dir = broker_dir or Path(os.environ.get("DBT_CELERY_BROKER_DIR") or root / "broker")
    broker_dir.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    return {
        "broker_url": None,
        "broker_transport": FILE_TRANSPORT,
        "broker_transport_options": {
            "data_folder_in": str(broker_dir),
            "data_folder_out": str(broker_dir),
            "store_processed": False,
            "control_folder": str(broker_dir / "control"),
            # The default of 1 s would add a second to every hop between tasks.
            "polling_interval": 0.05,
        },
        "result_backend": f"dbt_celery.celery.sqlite_backend:SQLiteBackend+sqlite:///{root / 'results.sqlite'}",
    }


def is_embedded(app: Celery) -> bool:
    """Say whether an app runs on the embedded default (filesystem broker)."""
    return not app.conf.broker_url and app.conf.broker_transport == FILE_TRANSPORT


def load_settings() -> dict[str, Any]:
    """Settings for the standalone app: celeryconfig.py if importable, else the environment."""
    module_name = os.environ.get("CELERY_CONFIG_MODULE", "celeryconfig")
    settings = settings_from_env()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
    else:
        settings |= {
            key: value
            for key, value in vars(module).items()
            if key.islower()
            and not key.startswith("_")
            and not callable(value)
            and not isinstance(value, types.ModuleType)
        }
    if not settings.get("broker_url"):
        settings.update(embedded_settings(state_dir()))
    return settings


def create_app(settings: Mapping[str, Any] | None = None, *, main: str = "dbt_celery") -> Celery:
    """A Celery app with dbt-celery's tasks and JSON-only settings."""
    app = Celery(main, set_as_current=False, include=["dbt_celery.celery.tasks"])
    app.conf.update({**_DEFAULTS, **(settings if settings is not None else load_settings())})
    if "pickle" in (app.conf.accept_content or []):
        raise ConfigurationError("dbt-celery refuses pickle: set accept_content to ['json']")
    import dbt_celery.celery.tasks  # noqa: F401 - registers the shared tasks, so a client app can send them

    return app
