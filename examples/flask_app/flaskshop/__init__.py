"""A minimal Flask app that builds examples/jaffle_shop through dbt-celery.

Celery is set up the way Flask's "Background Tasks with Celery" guide describes: the
Celery settings live in ``app.config["CELERY"]``, ``celery_init_app`` builds the Celery
app with a task class that runs every task inside the Flask app context, and
``make_celery.py`` exposes it to ``celery -A make_celery worker``. The guide turns
results off (``task_ignore_result=True``); dbt-celery's own tasks store theirs anyway.
"""

import os
from pathlib import Path

from celery import Celery, Task
from flask import Flask

from flaskshop.views import runs

EXAMPLES = Path(__file__).resolve().parents[2]


def create_app() -> Flask:
    """The Flask app, with its Celery app in ``app.extensions["celery"]``."""
    app = Flask(__name__)
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    project_dir = os.environ.get("DBT_PROJECT_DIR", str(EXAMPLES / "jaffle_shop"))
    app.config.from_mapping(
        CELERY=dict(
            broker_url=redis_url,
            result_backend=redis_url,
            task_ignore_result=True,
            include=["dbt_celery.tasks"],
            dbt_celery_producer_queue="dbt_celery.producer",
            dbt_celery_fallback_queue="dbt_celery.fallback",
            dbt_celery_consumer_queue="dbt_celery.consumer",
        ),
        DBT_PROJECT_DIR=project_dir,
        DBT_DUCKDB_PATH=os.environ.get("DBT_DUCKDB_PATH", str(Path(project_dir) / "jaffle_shop.duckdb")),
    )
    app.config.from_prefixed_env()  # FLASK_DBT_PROJECT_DIR=... and the like override the above
    celery_init_app(app)
    app.register_blueprint(runs)
    return app


def celery_init_app(app: Flask) -> Celery:
    """Build the Celery app of a Flask app; its tasks run inside the Flask app context."""

    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app
