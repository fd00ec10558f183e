"""Where each kind of dbt-celery task goes."""

from __future__ import annotations

import dataclasses

from celery import Celery

#: Queue names the standalone setup uses (a user's own app may set its own).
PRODUCER_QUEUE = "dbt_celery.producer"
CONSUMER_QUEUE = "dbt_celery.consumer"
FALLBACK_QUEUE = "dbt_celery.fallback"


@dataclasses.dataclass(frozen=True)
class Queues:
    """The queues of one app's dbt-celery tasks; None means the app's default queue."""

    producer: str | None
    consumer: str | None
    fallback: str | None

    @classmethod
    def of(cls, app: Celery) -> Queues:
        """Read the queue settings of an app (``dbt_celery_*_queue``)."""
        conf = app.conf
        return cls(
            conf.get("dbt_celery_producer_queue"),
            conf.get("dbt_celery_consumer_queue"),
            conf.get("dbt_celery_fallback_queue"),
        )
