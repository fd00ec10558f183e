"""A trivial Celery app: the memory floor of a ``celery worker`` beside dbt-celery's consumer worker.

``celery -A benchmarks.bare worker -P threads -c 4 -E`` on the same Redis broker, with the same
flags as the consumer worker but none of dbt-celery's code: what is left of the consumer
worker's RSS above this is dbt-celery's (and its messages'). Its tasks store their results in
the broker's Redis, as a consumer does, so its CPU per task is the floor of one Celery task.
"""

from __future__ import annotations

import os

from celery import Celery

BARE_QUEUE = "bench.bare"
NOOP_TASK = "bench_bare.noop"

_BROKER = os.environ.get("CELERY_BROKER_URL")
app = Celery(
    "bench_bare", broker=_BROKER, backend=os.environ.get("CELERY_RESULT_BACKEND") or _BROKER, set_as_current=False
)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_default_queue=BARE_QUEUE,
    task_ignore_result=False,  # stored, as a consumer's result is: the CPU floor of one Celery task here
    worker_send_task_events=True,
    broker_connection_retry_on_startup=True,
)


@app.task(name=NOOP_TASK)
def noop(value: int) -> int:
    """Do nothing (the floor's workload: as many trivial tasks as the consumer worker ran)."""
    return value
