"""Settings of the example project.

Celery's task results go to the Django database (django-celery-results, ``django-db``);
dbt-celery keeps its own records (leases, claims, node results) in Redis, named by
``CELERY_DBT_CELERY_STORE_URL``, because a database result backend cannot hold them.
Paths and URLs come from the environment so that the tests can point them elsewhere.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django_celery_results",
    "django_celery_beat",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "djshop.urls"
WSGI_APPLICATION = "djshop.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB_PATH", str(BASE_DIR / "db.sqlite3")),
        # Worker threads write task results at the same time; wait for the lock instead of failing.
        "OPTIONS": {"timeout": 30},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

# -- Celery (read by djshop/celery.py through namespace="CELERY") --------------------
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True  # TaskResult rows carry the task name
CELERY_TIMEZONE = TIME_ZONE
CELERY_IMPORTS = ["dbt_celery.tasks"]
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

# -- dbt-celery -----------------------------------------------------------------------
CELERY_DBT_CELERY_STORE_URL = REDIS_URL
CELERY_DBT_CELERY_PRODUCER_QUEUE = "dbt_celery.producer"
CELERY_DBT_CELERY_FALLBACK_QUEUE = "dbt_celery.fallback"
CELERY_DBT_CELERY_CONSUMER_QUEUE = "dbt_celery.consumer"

# -- what the views build -------------------------------------------------------------
DBT_PROJECT_DIR = os.environ.get("DBT_PROJECT_DIR", str(BASE_DIR.parent / "jaffle_shop"))
DBT_DUCKDB_PATH = os.environ.get("DBT_DUCKDB_PATH", str(Path(DBT_PROJECT_DIR) / "jaffle_shop.duckdb"))
