FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir ".[postgres,flower]"
ENV DBT_CELERY_PRELOAD_DBT=1
