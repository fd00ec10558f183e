"""Keep a Redis-backed worker alive across a Redis restart.

kombu 5.x closes a lost connection's channel and, in doing so, tries to give back the
messages the worker held (countdown tasks, ``acks_late`` tasks) over that very
connection, whose transport it has already let go: ``_connparams`` meets a ``None``
client and the worker exits CRITICAL (``'NoneType' object has no attribute
'hostname'``). dbt-celery's consumers always hold such messages, so every Redis restart
would take their worker down. With this fix the worker reconnects instead; the
messages it held stay in Redis's unacked index, come back after the visibility
timeout, and dbt-celery's watchdog re-sends the consumers among them sooner.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

log = logging.getLogger(__name__)


def keep_workers_alive_across_redis_restarts() -> None:
    """Make kombu's Redis QoS tolerate a connection it already closed (idempotent)."""
    from kombu.transport import redis as kombu_redis

    original = kombu_redis.QoS.restore_unacked
    if getattr(original, "dbt_celery_fix", False):
        return

    @functools.wraps(original)
    def restore_unacked(self: Any, client: Any = None) -> Any:
        try:
            return original(self, client)
        except AttributeError:
            held = len(self._delivered)
            self._delivered.clear()
            log.warning("broker connection gone: %d held message(s) come back after the visibility timeout", held)
            return None

    restore_unacked.dbt_celery_fix = True  # type: ignore[attr-defined]
    kombu_redis.QoS.restore_unacked = restore_unacked  # type: ignore[method-assign]
