"""Loaded into the test workers (``celery worker -I tests.signal_recorder``): writes every
Celery and dbt-celery signal a test looks at as one JSON line into $DBT_CELERY_TEST_SIGNALS."""

from __future__ import annotations

import json
import os
import threading

from celery.signals import task_failure, task_success

from dbt_celery.celery.signals import run_finished, run_started

_lock = threading.Lock()


def _write(**record) -> None:
    path = os.environ.get("DBT_CELERY_TEST_SIGNALS")
    if path:
        with _lock, open(path, "a") as file:
            file.write(json.dumps(record, default=str) + "\n")


@task_failure.connect
def _failed(sender=None, task_id=None, exception=None, **_):
    _write(signal="task_failure", task=sender.name, task_id=task_id, exception=str(exception))


@task_success.connect
def _succeeded(sender=None, result=None, **_):
    _write(signal="task_success", task=sender.name, task_id=sender.request.id)


@run_started.connect
def _run_started(sender=None, run_id=None, total=None, **_):
    _write(signal="run_started", run_id=run_id, total=total)


@run_finished.connect
def _run_finished(sender=None, run_id=None, state=None, counts=None, **_):
    _write(signal="run_finished", run_id=run_id, state=state, counts=counts)


def read(path) -> list[dict]:
    """Every record written so far."""
    try:
        with open(path) as file:
            return [json.loads(line) for line in file if line.strip()]
    except FileNotFoundError:
        return []
