"""Celery settings for the standalone dbt-celery app (``celery -A dbt_celery worker``).

Everything comes from the environment, JSON only:

    CELERY_BROKER_URL          e.g. redis://127.0.0.1:6379/0   (unset: the embedded default)
    CELERY_RESULT_BACKEND      defaults to the broker URL when that is Redis
    DBT_CELERY_PRODUCER_QUEUE  default dbt_celery.producer
    DBT_CELERY_CONSUMER_QUEUE  default dbt_celery.consumer
    DBT_CELERY_FALLBACK_QUEUE  default dbt_celery.fallback
    DBT_CELERY_CONTROL_QUEUE   default dbt_celery.control (run starts: beat, send_task)

Production setup: Redis as broker and result backend, one worker for the producer and
fallback queues (prefork, one dbt build per process) and one for consumers and run starts:

    celery -A dbt_celery worker -Q dbt_celery.producer,dbt_celery.fallback -c 1 -E
    celery -A dbt_celery worker -Q dbt_celery.consumer,dbt_celery.control -P threads -c 4 -E

A plain ``celery -A dbt_celery worker`` (no -Q) consumes every one of these queues.
"""

from dbt_celery.celery.config import settings_from_env

globals().update(settings_from_env())
