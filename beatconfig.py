"""Celery settings for beat in the standalone setup: celeryconfig.py's, plus one scheduled build.

    CELERY_CONFIG_MODULE=beatconfig celery -A dbt_celery beat

Beat needs the schedule; the workers do not (they keep ``celeryconfig``). The entry is the
README's form, filled in from the environment:

    DBT_CELERY_PROJECT_DIR  the dbt project to build, with its profiles.yml (default /project,
                            where docker-compose.yml mounts it)
    DBT_CELERY_SCHEDULE     a crontab line (default "0 2 * * *": nightly at 02:00) or a number
                            of seconds between two starts
    DBT_CELERY_OVERLAP      what a start does while the previous run still builds: skip (the
                            default), queue, or cancel_previous
"""

import os

from celery.schedules import crontab

from dbt_celery import RunSpec
from dbt_celery.celery.config import settings_from_env

globals().update(settings_from_env())


def _schedule(text: str) -> "float | crontab":
    try:
        return float(text)
    except ValueError:
        return crontab.from_string(text)


_project = os.environ.get("DBT_CELERY_PROJECT_DIR", "/project")
_spec = RunSpec(project_dir=_project, profiles_dir=_project)

beat_schedule = {
    "dbt-build": {
        "task": "dbt_celery.start_run",
        "schedule": _schedule(os.environ.get("DBT_CELERY_SCHEDULE", "0 2 * * *")),
        "kwargs": {"spec": _spec.to_dict(), "overlap": os.environ.get("DBT_CELERY_OVERLAP", "skip")},
    },
}
