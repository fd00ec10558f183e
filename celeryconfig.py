"""Celery settings for the standalone dbt-celery app (``celery -A dbt_celery worker``).

Everything comes from the environment, JSON only:

    CELERY_BROKER_URL          e.g. redis://127.0.0.1:6379/0   (unset: the embedded default)
    CELERY_RESULT_BACKEND      defaults to the broker URL when that is Redis
    DBT_CELERY_PRODUCER_QUEUE  default dbt_celery.producer
    DBT_CELERY_CONSUMER_QUEUE  default dbt_celery.consumer
    DBT_CELERY_FALLBACK_QUEUE  default dbt_celery.fallback

Production setup: Redis as broker and result backend, one worker for the producer and
fallback queues (prefork, one dbt build per process) and one for consumers:

    celery -A dbt_celery worker -Q dbt_celery.producer,dbt_celery.fallback -c 1 -E
    celery -A dbt_celery worker -Q dbt_celery.consumer -P threads -c 4 -E
"""

from dbt_celery.celery.config import settings_from_env

globals().update(settings_from_env())
