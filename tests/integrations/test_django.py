"""The Django example (examples/django_app), wired the way Celery's Django guide describes.

``djshop/celery.py`` reads every ``CELERY_*`` Django setting; Celery's results go to
django-celery-results (``django-db``), dbt-celery's records to Redis
(``CELERY_DBT_CELERY_STORE_URL``). Real workers started the Django way
(``celery -A djshop worker``, after ``manage.py migrate``), the views called with
Django's test client in this process, one real dbt build on DuckDB per test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis
from celery import Celery

import dbt_celery
from dbt_celery import DbtRun, RunSpec, UnsupportedBackend
from dbt_celery.core.plan import consumer_task_id, producer_task_id
from tests.helpers import REPO
from tests.integrations.app_workers import RUN_PATIENCE, AppWorkers, example_env, wait_for, wait_for_the_example

DJANGO_APP = REPO / "examples" / "django_app"


@pytest.fixture(scope="module")
def env(app_redis_url: str, paths: dict[str, Path]) -> dict[str, str]:
    return {
        **example_env(app_redis_url, paths),
        "DJANGO_SETTINGS_MODULE": "djshop.settings",
        "DJANGO_DB_PATH": str(paths["root"] / "db.sqlite3"),
    }


@pytest.fixture(scope="module")
def site(env: dict[str, str]) -> Iterator[None]:
    """The example's database migrated (``manage.py migrate``) and its settings loaded in this process."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        migrate = [sys.executable, "manage.py", "migrate", "--no-input"]
        done = subprocess.run(migrate, cwd=DJANGO_APP, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        patch.syspath_prepend(str(DJANGO_APP))
        import django
        from django.test.utils import setup_test_environment, teardown_test_environment

        django.setup()
        setup_test_environment()  # lets the test client's host in, as Django's own test runner does
        yield
        teardown_test_environment()


@pytest.fixture(scope="module")
def workers(site: None, env: dict[str, str], paths: dict[str, Path]) -> Iterator[AppWorkers]:
    with AppWorkers("djshop", DJANGO_APP, env, paths["root"] / "logs") as started:
        yield started


@pytest.fixture(scope="module")
def celery_app(site: None) -> Celery:
    from djshop.celery import app

    return app


def test_without_a_store_url_submitting_names_the_setting(site: None, paths: dict[str, Path]):
    from django.conf import settings
    from django.test import override_settings

    with override_settings():
        del settings.CELERY_DBT_CELERY_STORE_URL
        app = Celery("djshop", set_as_current=False)  # as djshop/celery.py builds it
        app.config_from_object("django.conf:settings", namespace="CELERY")
        with pytest.raises(UnsupportedBackend, match="DatabaseBackend") as refused:
            dbt_celery.submit(RunSpec(project_dir=str(paths["project"])), app=app)
    assert "set CELERY_DBT_CELERY_STORE_URL = 'redis://...'" in str(refused.value)


def test_a_run_submitted_from_a_django_view_builds_the_project(workers: AppWorkers, celery_app: Celery, env, paths):
    from django.test import Client
    from django_celery_results.models import TaskResult

    client = Client()
    response = client.post("/runs/")
    assert response.status_code == 202, response.content
    run_id = response.json()["run_id"]

    status = wait_for_the_example(lambda: _get(client, f"/runs/{run_id}/"), workers, paths["duckdb"])

    # Celery's results are rows of django-celery-results' table ...
    consumers = {consumer_task_id(run_id, uid): uid for uid in status["nodes"]}
    rows = wait_for(
        lambda: dict(TaskResult.objects.filter(task_id__in=consumers).values_list("task_id", "status")),
        lambda rows: len(rows) == 27 and set(rows.values()) <= {"SUCCESS", "FAILURE"},
        "a TaskResult row for every consumer",
        workers,
    )
    assert set(rows.values()) == {"SUCCESS"}, rows
    assert set(TaskResult.objects.filter(task_id__in=consumers).values_list("task_name", flat=True)) == {
        "dbt_celery.consume"
    }
    producer = TaskResult.objects.get(task_id=producer_task_id(run_id))
    assert (producer.task_name, producer.status) == ("dbt_celery.produce", "SUCCESS")
    # ... and dbt-celery's own records are in Redis, readable from this process.
    assert redis.Redis.from_url(env["REDIS_URL"]).keys(f"dbt-celery-{run_id}-*")
    assert DbtRun.restore(run_id, app=celery_app).status().state == "success"

    assert client.get("/runs/no-such-run/").status_code == 404


def test_beat_starts_a_run_from_a_periodic_task_row(workers: AppWorkers, celery_app: Celery, paths):
    """django-celery-beat's DatabaseScheduler sends ``dbt_celery.start_run`` with a JSON spec from its table."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask
    from django_celery_results.models import TaskResult

    spec = RunSpec(
        project_dir=str(paths["project"]),
        profile={"type": "duckdb", "path": str(paths["duckdb"])},
        select=["raw_customers"],
    )
    every_second = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name="jaffle-shop customers",
        task="dbt_celery.start_run",
        interval=every_second,
        kwargs=json.dumps({"spec": spec.to_dict()}),
        one_off=True,  # one run is enough to show it
    )
    beat_log = paths["root"] / "beat.log"
    command = [sys.executable, "-m", "celery", "-A", "djshop", "beat", "--loglevel", "INFO",
               "--pidfile", str(paths["root"] / "beat.pid")]  # fmt: skip
    with open(beat_log, "wb") as log:
        beat = subprocess.Popen(command, cwd=DJANGO_APP, env=workers.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        sent = wait_for(
            lambda: list(TaskResult.objects.filter(task_name="dbt_celery.start_run").values_list("status", "result")),
            lambda rows: bool(rows) and rows[0][0] == "SUCCESS",
            "a SUCCESS row of dbt_celery.start_run",
            workers,
        )
    finally:
        beat.terminate()
        beat.wait(30)
    run_id = json.loads(sent[0][1])["run_id"]
    status = DbtRun.restore(run_id, app=celery_app).wait(RUN_PATIENCE)
    assert status.state == "success", status.to_dict()
    assert list(status.nodes) == ["seed.jaffle_shop.raw_customers"]


def _get(client: Any, url: str) -> dict[str, Any]:
    response = client.get(url)
    assert response.status_code == 200, response.content
    return response.json()
