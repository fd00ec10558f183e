"""Two JSON views: start a dbt run, read its status.

Add authentication before exposing them: anyone who can POST can start a build.
"""

from celery import Celery
from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

import dbt_celery
from dbt_celery import ConfigurationError, DbtRun, RunSpec

runs = Blueprint("runs", __name__, url_prefix="/runs")


def _celery() -> Celery:
    return current_app.extensions["celery"]


@runs.post("/")
def start_run() -> ResponseReturnValue:
    """Submit a build of the project; answer at once with the run's id."""
    spec = RunSpec(
        project_dir=current_app.config["DBT_PROJECT_DIR"],
        profile={"type": "duckdb", "path": current_app.config["DBT_DUCKDB_PATH"]},
    )
    run = dbt_celery.submit(spec, app=_celery())
    return jsonify(run_id=run.id), 202


@runs.get("/<run_id>/")
def run_status(run_id: str) -> ResponseReturnValue:
    """The run's state and every node's status, as ``dbt-celery status --json`` prints them."""
    try:
        run = DbtRun.restore(run_id, app=_celery())
    except ConfigurationError:
        return jsonify(error=f"no dbt-celery run {run_id}"), 404
    return jsonify(run.status().to_dict())
