"""dbt-celery's Celery tasks, for an app's ``include``/``imports`` setting.

Add ``"dbt_celery.tasks"`` to your app's ``include`` (or Django's ``CELERY_IMPORTS``) and
its workers run dbt-celery's tasks; they live in :mod:`dbt_celery.celery.tasks`.
"""

from dbt_celery.celery.tasks import consume, produce, start_run, watch

__all__ = ["consume", "produce", "start_run", "watch"]
