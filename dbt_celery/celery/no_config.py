"""An empty Celery config module: makes the embedded workers ignore any celeryconfig.py."""
