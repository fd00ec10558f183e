"""Where each kind of dbt-celery task goes, and the worker commands that take them."""

from __future__ import annotations

import dataclasses
import shlex

from celery import Celery
from kombu import Exchange, Queue

#: Queue names the standalone setup uses (a user's own app may set its own).
PRODUCER_QUEUE = "dbt_celery.producer"
CONSUMER_QUEUE = "dbt_celery.consumer"
FALLBACK_QUEUE = "dbt_celery.fallback"
#: Starts of runs (``dbt_celery.start_run``, a beat tick): light, so never behind a build.
CONTROL_QUEUE = "dbt_celery.control"


@dataclasses.dataclass(frozen=True)
class Queues:
    """The queues of one app's dbt-celery tasks; None means the app's default queue."""

    producer: str | None
    consumer: str | None
    fallback: str | None
    control: str | None = None

    @classmethod
    def of(cls, app: Celery) -> Queues:
        """Read the queue settings of an app (``dbt_celery_*_queue``)."""
        conf = app.conf
        return cls(
            conf.get("dbt_celery_producer_queue"),
            conf.get("dbt_celery_consumer_queue"),
            conf.get("dbt_celery_fallback_queue"),
            conf.get("dbt_celery_control_queue"),
        )

    def names(self, default: str) -> dict[str, list[str]]:
        """The queue names of the two worker kinds: ``heavy`` (dbt runs) and ``light`` (no dbt)."""
        heavy = _unique([self.producer or default, self.fallback or default])
        light = _unique([self.consumer or default, self.control or default])
        return {"heavy": heavy, "light": light}


def declared(names: list[str]) -> list[Queue]:
    """Declarations of queues, each on a direct exchange of its own name (as Celery makes a missing one).

    Set as ``task_queues``, they are what a worker started without ``-Q`` consumes.
    """
    return [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in _unique(names)]


def worker_commands(app: Celery, app_name: str) -> list[str]:
    """Worker commands that take every dbt-celery task of ``app``: one process first, then the split pair.

    The one-process command has no ``-Q`` when a plain worker of the app already consumes
    every queue (the standalone app declares them all); the pair is the production setup.
    """
    names = Queues.of(app).names(app.conf.task_default_queue)
    every = _unique(names["heavy"] + names["light"])
    base = ["celery", "-A", app_name, "worker"]
    plain = set(every) <= set(app.amqp.queues.consume_from)
    commands = [shlex.join(base if plain else [*base, "-Q", ",".join(every)])]
    if set(names["heavy"]).isdisjoint(names["light"]):
        commands.append(shlex.join([*base, "-Q", ",".join(names["heavy"]), "-c", "1", "-E"]))
        commands.append(shlex.join([*base, "-Q", ",".join(names["light"]), "-P", "threads", "-c", "4", "-E"]))
    return commands


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))
