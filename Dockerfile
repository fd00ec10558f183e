# The image of every dbt-celery service in docker-compose.yml (workers, beat, Flower, the CLI).
FROM python:3.11-slim
WORKDIR /app
COPY . /app
# postgres: the compose warehouse's adapter; flower: the monitoring service.
RUN pip install --no-cache-dir ".[postgres,flower]"
# celeryconfig.py (workers) and beatconfig.py (beat) are importable from every service.
ENV PYTHONPATH=/app
