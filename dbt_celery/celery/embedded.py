"""The embedded default: real Celery workers on this machine, with nothing to install or start.

``dbt-celery run`` uses it when no broker is configured: the usual local workers
(:mod:`dbt_celery.celery.workers`) on a filesystem broker and a SQLite result store under the
state directory. Same tasks, same code path as production; no eager mode.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from celery import Celery

from dbt_celery.celery.config import create_app, embedded_settings, settings_from_env
from dbt_celery.celery.workers import LocalWorkers


class EmbeddedWorkers(LocalWorkers):
    """Local workers on a private filesystem broker folder, removed again on exit."""

    def __init__(self, root: Path) -> None:
        super().__init__({}, root / "logs")
        self.broker_dir = root / "broker" / self.session
        self.app: Celery = create_app({**settings_from_env({}), **embedded_settings(root, self.broker_dir)})
        for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
            self.env.pop(name, None)
        self.env.update(
            DBT_CELERY_STATE_DIR=str(root),
            DBT_CELERY_BROKER_DIR=str(self.broker_dir),
            CELERY_CONFIG_MODULE="dbt_celery.celery.no_config",
        )

    def stop(self) -> None:
        """Stop the workers and remove this session's broker folder."""
        super().stop()
        shutil.rmtree(self.broker_dir, ignore_errors=True)


__all__ = ["EmbeddedWorkers"]
