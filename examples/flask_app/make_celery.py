"""The Flask app's Celery app, for ``celery -A make_celery worker`` (run from this folder)."""

from flaskshop import create_app

flask_app = create_app()
celery_app = flask_app.extensions["celery"]
