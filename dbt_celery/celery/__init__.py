"""The Celery layer: the tasks, the app's settings, the status store's backend, local workers.

The only part of dbt-celery that calls Celery's task API.
"""
