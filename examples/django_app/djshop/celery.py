"""The project's Celery app, wired the way Celery's Django guide describes.

Every Django setting that starts with ``CELERY_`` configures it: ``CELERY_BROKER_URL``
is ``broker_url``, ``CELERY_DBT_CELERY_STORE_URL`` is dbt-celery's ``dbt_celery_store_url``.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djshop.settings")

app = Celery("djshop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
