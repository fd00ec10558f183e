"""The Flask example (examples/flask_app), set up the way Flask's Celery guide describes.

Real workers started the Flask way (``celery -A make_celery worker`` from the example's
folder), the views called with Flask's test client, one real dbt build on DuckDB. The
guide sets ``task_ignore_result=True``; dbt-celery's tasks must store their results anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from celery.result import AsyncResult
from flask import Flask

from dbt_celery import DbtRun
from dbt_celery.core.plan import producer_task_id
from tests.helpers import REPO
from tests.integrations.app_workers import AppWorkers, example_env, wait_for, wait_for_the_example

FLASK_APP = REPO / "examples" / "flask_app"


@pytest.fixture(scope="module")
def env(app_redis_url: str, paths: dict[str, Path]) -> dict[str, str]:
    return example_env(app_redis_url, paths)


@pytest.fixture(scope="module")
def flask_app(env: dict[str, str]) -> Iterator[Flask]:
    """The example's Flask app in this process, configured like its workers."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        patch.syspath_prepend(str(FLASK_APP))
        from flaskshop import create_app

        yield create_app()


@pytest.fixture(scope="module")
def workers(env: dict[str, str], paths: dict[str, Path]) -> Iterator[AppWorkers]:
    with AppWorkers("make_celery", FLASK_APP, env, paths["root"] / "logs") as started:
        yield started


def test_the_guide_turns_results_off(flask_app: Flask):
    celery_app = flask_app.extensions["celery"]
    assert celery_app.conf.task_ignore_result is True
    assert celery_app.tasks["dbt_celery.consume"].ignore_result is False  # dbt-celery's tasks keep theirs
    assert celery_app.tasks["dbt_celery.produce"].ignore_result is False


def test_a_run_submitted_from_a_flask_view_builds_the_project(flask_app: Flask, workers: AppWorkers, paths):
    client = flask_app.test_client()
    response = client.post("/runs/")
    assert response.status_code == 202, response.text
    run_id = response.get_json()["run_id"]

    wait_for_the_example(lambda: _get(client, f"/runs/{run_id}/"), workers, paths["duckdb"])

    celery_app = flask_app.extensions["celery"]
    group = DbtRun.restore(run_id, app=celery_app).results()
    assert group is not None and len(group.results) == 27
    states = wait_for(
        lambda: {result.id: result.state for result in group.results},
        lambda states: set(states.values()) <= {"SUCCESS", "FAILURE"},
        "a stored result for every consumer",
        workers,
    )
    assert set(states.values()) == {"SUCCESS"}, states
    assert AsyncResult(producer_task_id(run_id), app=celery_app).state == "SUCCESS"

    assert client.get("/runs/no-such-run/").status_code == 404


def _get(client: Any, url: str) -> dict[str, Any]:
    response = client.get(url)
    assert response.status_code == 200, response.text
    return response.get_json()
