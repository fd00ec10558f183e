"""Keeping a lease alive while its holder works, and noticing when it must stop.

A :class:`LeaseKeeper` is a daemon thread beside a build (the producer's ``dbt build``,
or one inline build). Every ``interval`` seconds it renews the lease and asks a check
whether the work should stop (the run was cancelled, its deadline passed). When the
renewal fails, another holder took the lease over: the keeper calls ``on_stop`` with
``LOST`` so the build stops and writes nothing more. A failed renewal because the
store is unreachable is not a loss: it is retried at the next beat, and the lease
simply expires if the store stays away.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from dbt_celery.core.store import HeldLease, StatusStore

log = logging.getLogger(__name__)

#: The reason given to ``on_stop`` when another holder took the lease.
LOST = "lease lost"
#: Longest time between two beats, in seconds: how soon a cancel or a deadline stops a build.
MAX_BEAT = 2.0


def beat_interval(ttl: float) -> float:
    """Seconds between two beats under a lease of ``ttl`` s: well inside it, and often enough to stop soon."""
    return max(0.2, min(ttl / 4, MAX_BEAT))


class LeaseKeeper:
    """A thread that renews a lease and stops its holder's work when it must."""

    def __init__(
        self,
        store: StatusStore,
        held: HeldLease,
        interval: float,
        on_stop: Callable[[str], None],
        check: Callable[[], str | None] = lambda: None,
        on_beat: Callable[[], None] = lambda: None,
    ) -> None:
        self.store, self.held, self.interval = store, held, interval
        self.on_stop, self.check, self.on_beat = on_stop, check, on_beat
        self.stop_reason: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dbt-celery-lease", daemon=True)

    @property
    def lost(self) -> bool:
        """Whether another holder took the lease over."""
        return self.stop_reason == LOST

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        self._thread.join(self.interval + 5)

    def _run(self) -> None:
        while not self.lost and not self._done.wait(self.interval):
            try:
                self._beat()
            except Exception:  # noqa: BLE001 - an unreachable store: the next beat tries again
                log.warning("lease %s of run %s: beat failed", self.held.name, self.held.run_id, exc_info=True)

    def _beat(self) -> None:
        if not self.store.renew(self.held):
            self.stop(LOST)
            return
        reason = self.check()
        if reason is not None:
            self.stop(reason)
        self.on_beat()

    def stop(self, reason: str) -> None:
        """Stop the holder's work for ``reason``, once (a lost lease always wins; the keeper then ends)."""
        if self.stop_reason is not None and (self.stop_reason == LOST or reason != LOST):
            return
        self.stop_reason = reason
        log.warning("run %s: stopping %s (%s)", self.held.run_id, self.held.name, reason)
        self.on_stop(reason)
