"""Two JSON views: start a dbt run, read its status.

Add authentication before exposing them: anyone who can POST can start a build.
"""

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

import dbt_celery
from dbt_celery import ConfigurationError, DbtRun, RunSpec
from djshop.celery import app


@csrf_exempt
@require_POST
def start_run(request: HttpRequest) -> JsonResponse:
    """Submit a build of the project; answer at once with the run's id."""
    spec = RunSpec(
        project_dir=settings.DBT_PROJECT_DIR,
        profile={"type": "duckdb", "path": settings.DBT_DUCKDB_PATH},
    )
    run = dbt_celery.submit(spec, app=app)
    return JsonResponse({"run_id": run.id}, status=202)


@require_GET
def run_status(request: HttpRequest, run_id: str) -> JsonResponse:
    """The run's state and every node's status, as ``dbt-celery status --json`` prints them."""
    try:
        run = DbtRun.restore(run_id, app=app)
    except ConfigurationError:
        return JsonResponse({"error": f"no dbt-celery run {run_id}"}, status=404)
    return JsonResponse(run.status().to_dict())
