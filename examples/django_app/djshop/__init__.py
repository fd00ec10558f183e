"""A minimal Django project that builds examples/jaffle_shop through dbt-celery."""

# Load the Celery app with Django, so that views and `celery -A djshop` use the same app.
from djshop.celery import app as celery_app

__all__ = ["celery_app"]
