"""dbt-celery: run dbt projects on Celery.

One producer task runs a single ``dbt build`` for the whole selection and records each
node's result in the Celery result backend as dbt finishes it; one light consumer task
per node reflects that result, chained along the dbt DAG, visible and retryable on its
own in Flower. Importing this package imports neither dbt nor a Celery app.

``celery -A dbt_celery worker`` starts a worker of the standalone app (built on first
use of ``dbt_celery.app``).
"""

from __future__ import annotations

from typing import Any

from dbt_celery.core.profiles import DuckDBProfile, PostgresProfile, RedshiftProfile
from dbt_celery.core.records import NodeEvent, NodeOutcome, NodeState
from dbt_celery.core.spec import RunSpec
from dbt_celery.errors import (
    BuildFailed,
    ConfigurationError,
    ConsumerCrashed,
    DbtCeleryError,
    DbtInvocationError,
    NodeError,
    NodeFailed,
    PayloadError,
    ProducerFailed,
    ProfileError,
    ProjectNotFound,
    RunCancelled,
    SelectionError,
    StoreUnavailable,
    UnsupportedBackend,
    UpstreamFailed,
    WaitTimedOut,
)

__all__ = [
    # running
    "RunSpec",
    "submit",
    "retry",
    "DbtRun",
    "RunArtifacts",
    "RunStatus",
    "NodeStatus",
    "create_app",
    # run-level signals
    "run_started",
    "run_finished",
    # profiles
    "DuckDBProfile",
    "PostgresProfile",
    "RedshiftProfile",
    # records
    "NodeEvent",
    "NodeOutcome",
    "NodeState",
    # errors
    "DbtCeleryError",
    "ConfigurationError",
    "ProjectNotFound",
    "ProfileError",
    "SelectionError",
    "UnsupportedBackend",
    "DbtInvocationError",
    "PayloadError",
    "BuildFailed",
    "NodeError",
    "NodeFailed",
    "UpstreamFailed",
    "ProducerFailed",
    "WaitTimedOut",
    "RunCancelled",
    "ConsumerCrashed",
    "StoreUnavailable",
]

_LAZY = {
    "submit": "dbt_celery.run",
    "DbtRun": "dbt_celery.run",
    "retry": "dbt_celery.run",
    "RunArtifacts": "dbt_celery.core.artifacts",
    "RunStatus": "dbt_celery.core.summary",
    "NodeStatus": "dbt_celery.core.summary",
    "create_app": "dbt_celery.celery.config",
    "run_started": "dbt_celery.celery.signals",
    "run_finished": "dbt_celery.celery.signals",
}
_standalone_app = None


def __getattr__(name: str) -> Any:
    # Lazy, so that importing dbt_celery never creates a Celery app that would become
    # the current app of a user's Django or Flask process.
    global _standalone_app
    if name == "app":
        if _standalone_app is None:
            from dbt_celery.celery.config import create_app

            _standalone_app = create_app()
            _standalone_app.set_current()
        return _standalone_app
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dbt_celery' has no attribute {name!r}")
