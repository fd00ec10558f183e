"""Starting a run and following it from any process: :func:`submit` and :class:`DbtRun`.

``submit`` is cheap and imports no dbt, so a web request or a beat tick can call it:
it records the run, enqueues the producer on its own queue and returns a handle at
once. The producer plans the run on a worker (where dbt and the project live) and
enqueues the first consumers; the handle reads everything back from the status store,
so ``DbtRun.restore(run_id)`` works from any other process.
"""

from __future__ import annotations

import time
from typing import Callable

from celery import Celery, current_app
from celery.result import AsyncResult, GroupResult

from dbt_celery.celery import messages, tasks, watchdog
from dbt_celery.celery.backends import store_for
from dbt_celery.core.artifacts import RunArtifacts, read_artifacts, retry_spec
from dbt_celery.core.plan import plan_summary
from dbt_celery.core.spec import RunSpec
from dbt_celery.core.summary import NodeStatus, RunStatus, SummaryCache, summarize
from dbt_celery.errors import ConfigurationError

__all__ = ["DbtRun", "NodeStatus", "RunArtifacts", "RunStatus", "retry", "retry_spec_of", "submit"]

#: A waiting handle sleeps at least this many times as long as its last status read took.
PAUSE_PER_READ = 4.0


class DbtRun:
    """A handle on one run, usable from any process that shares the status store."""

    def __init__(self, run_id: str, app: Celery | None = None) -> None:
        self.id = run_id
        self.app = app or current_app
        self.store = store_for(self.app)

    def __repr__(self) -> str:
        return f"<DbtRun {self.id}>"

    @classmethod
    def restore(cls, run_id: str, app: Celery | None = None) -> DbtRun:
        """Find a run started elsewhere by its id."""
        run = cls(run_id, app)
        if run.store.run(run_id) is None:
            raise ConfigurationError(f"no dbt-celery run {run_id} in this store")
        return run

    @property
    def producer_result(self) -> AsyncResult:
        """The Celery result of the run's producer task."""
        return tasks.producer_result(self.app, self.id)

    def results(self) -> GroupResult | None:
        """The consumers' Celery results as one group (None until the run is planned)."""
        planned = plan_summary(self.store, self.id)
        return None if planned is None else tasks.consumer_results(self.app, self.id, planned)

    def status(self) -> RunStatus:
        """Read the run's state and every node's status now (a store blip is ridden out)."""
        return summarize(self.store, self.id)

    def artifacts(self) -> RunArtifacts:
        """The run's combined ``run_results.json`` and ``manifest.json`` (``.write(dir)`` saves them).

        One document for the whole run in dbt's schema: each node's result from the build
        that built it last (an inline rebuild's when a consumer rebuilt it), ``skipped``
        for nodes nothing ran. ``dbt retry --state DIR`` reads it.
        """
        return read_artifacts(self.store, self.id)

    def spec(self) -> RunSpec:
        """The spec the run was submitted with."""
        document = self.store.run(self.id)
        if document is None:
            raise ConfigurationError(f"no dbt-celery run {self.id} in this store")
        return RunSpec.from_dict(document.spec)

    def cancel(self, reason: str = "cancelled by request") -> bool:
        """Stop the run: dbt is interrupted, unfinished nodes end ``cancelled``. True for the first request."""
        return self.store.cancel(self.id, reason)

    def wait(
        self,
        timeout: float | None = None,
        *,
        interval: float = 0.25,
        on_update: Callable[[RunStatus], None] | None = None,
    ) -> RunStatus:
        """Block until the run ends (or ``timeout`` seconds pass: TimeoutError)."""
        deadline = time.monotonic() + timeout if timeout is not None else None
        tended = time.monotonic()
        cache = SummaryCache()  # ended nodes are read once, not on every pass
        while True:
            read_at = time.monotonic()
            status = summarize(self.store, self.id, cache=cache)
            # A big run's status costs real reads: keep this observer to a fifth of a core or less.
            pause = max(interval, PAUSE_PER_READ * (time.monotonic() - read_at))
            if on_update is not None:
                on_update(status)
            if status.done:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {self.id} still {status.state} after {timeout} s")
            if time.monotonic() - tended > messages.WATCH_INTERVAL:
                # Whoever waits helps the watchdog: re-send lost consumers, resume a dead producer.
                tended = time.monotonic()
                watchdog.tend(self.app, self.id, by_watchdog=False)
            time.sleep(pause)


def submit(spec: RunSpec, *, app: Celery | None = None) -> DbtRun:
    """Start a run: record it, enqueue its producer, and return its handle at once."""
    app = app or current_app
    run_id = messages.send_run(app, spec)
    return DbtRun(run_id, app)


def retry_spec_of(run_id: str, *, app: Celery | None = None) -> RunSpec | None:
    """The spec of a run rebuilding exactly the failed and not-run nodes of ended run ``run_id`` (None: none).

    Those are the nodes ``dbt retry`` would pick from the run's combined artifacts, with the
    earlier run's flags. A run still going is refused (:class:`ConfigurationError`).
    """
    earlier = DbtRun.restore(run_id, app)
    status = earlier.status()
    if not status.done:
        raise ConfigurationError(f"run {run_id} is still {status.state}: retry it once it has ended")
    return retry_spec(earlier.store, run_id, earlier.spec())


def retry(run_id: str, *, app: Celery | None = None) -> DbtRun | None:
    """Start one new run (one producer build) of exactly the failed and not-run nodes of an ended run.

    Returns its handle, or None when every node of the earlier run passed.
    """
    app = app or current_app
    spec = retry_spec_of(run_id, app=app)
    return submit(spec, app=app) if spec is not None else None
