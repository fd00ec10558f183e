"""Run-level signals and events: connect to them to learn when a run starts and ends.

Node-level news already comes from Celery itself: each node's consumer task ends in
SUCCESS or FAILURE (so ``task_success`` / ``task_failure`` fire once per node). These
say what Celery cannot: that a whole run started or ended, with its counts.

* :data:`run_started` is sent in the producer's worker once a run is planned
  (``run_id``, ``total``), and :data:`run_finished` in the worker whose watchdog round
  first sees the run over (``run_id``, ``state``, ``counts``). Both are Celery
  :class:`~celery.utils.dispatch.Signal` objects: ``@run_finished.connect``.
* Every process with a Celery event receiver (Flower, ``celery events``) also gets them
  as the events ``dbt-run-started`` and ``dbt-run-finished`` with the same fields.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.utils.dispatch import Signal

log = logging.getLogger(__name__)

run_started = Signal(name="dbt_celery.run_started", providing_args={"run_id", "total"})
run_finished = Signal(name="dbt_celery.run_finished", providing_args={"run_id", "state", "counts"})


def announce(app: Celery, signal: Signal, sender: Any, hostname: str | None = None, **fields: Any) -> None:
    """Send a run-level signal here and the matching event to every event receiver (as worker ``hostname``)."""
    signal.send(sender=sender, **fields)
    event = "dbt-run-started" if signal is run_started else "dbt-run-finished"
    try:
        with app.events.default_dispatcher(hostname=hostname) as dispatcher:
            dispatcher.send(event, **fields)
    except Exception as exc:  # noqa: BLE001 - monitoring must never break a run
        log.warning("could not send the %s event: %r", event, exc)
