"""The local RabbitMQ for tests: private vhosts, queue listings and broker settings changed for a while.

Every test that uses RabbitMQ works in a vhost of its own (deleted afterwards), so it never
touches another user's queues. Broker-wide settings (``consumer_timeout``,
``channel_tick_interval``) are changed only through :func:`broker_setting`, which puts the
value found before back.
"""

from __future__ import annotations

import subprocess
import uuid
from contextlib import contextmanager
from typing import Iterator, NamedTuple

import pytest

from tests.helpers import wait_for

#: The local RabbitMQ (guest/guest may log in only from 127.0.0.1).
AMQP_SERVER = "amqp://guest:guest@127.0.0.1:5672"
#: Queues Celery's remote control and events make for themselves (not dbt-celery's).
CELERY_OWN = (".pidbox", "celeryev.", "celery@")


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl`` and return what it printed; fail the test if RabbitMQ is not there."""
    try:
        done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        pytest.fail(f"rabbitmqctl cannot run: {exc}")
    if done.returncode != 0:
        pytest.fail(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done.stdout


def rabbit_eval(expression: str) -> str:
    """Evaluate an Erlang expression on the broker node (``rabbitmqctl eval``)."""
    return rabbitmqctl("eval", expression).strip()


@contextmanager
def private_vhost(prefix: str = "dbt-celery") -> Iterator[str]:
    """A vhost of the caller only, for guest, deleted with everything in it at the end; yields its URL."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"{AMQP_SERVER}/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


@contextmanager
def broker_setting(name: str, value: int) -> Iterator[None]:
    """Set the broker's application setting ``name`` while the block runs, then put the old value back.

    These are node-wide: keep the block short. ``consumer_timeout`` is read when a channel
    opens (a channel keeps the value it opened with); ``channel_tick_interval`` (how often a
    channel checks its deliveries against that timeout, 60 s by default) is read on every tick.
    """
    before = rabbit_eval(f"application:get_env(rabbit, {name}).")
    rabbit_eval(f"application:set_env(rabbit, {name}, {int(value)}).")
    try:
        yield
    finally:
        if before.startswith("{ok,"):
            rabbit_eval(f"application:set_env(rabbit, {name}, {before.removeprefix('{ok,').removesuffix('}')}).")
        else:
            rabbit_eval(f"application:unset_env(rabbit, {name}).")


class QueueState(NamedTuple):
    """One queue of a vhost as RabbitMQ counts it."""

    name: str
    type: str
    ready: int
    unacked: int
    consumers: int


def vhost_of(url: str) -> str:
    """The vhost part of an ``amqp://`` URL."""
    return url.rsplit("/", 1)[1]


def queues(url: str) -> dict[str, QueueState]:
    """dbt-celery's (and any stray) queues of a vhost, Celery's own control and event queues left out."""
    out = rabbitmqctl(
        "list_queues", "-q", "--no-table-headers", "-p", vhost_of(url),
        "name", "type", "messages_ready", "messages_unacknowledged", "consumers",
    )  # fmt: skip
    found = {}
    for line in out.splitlines():
        name, kind, ready, unacked, consumers = line.split("\t")
        if not any(part in name for part in CELERY_OWN) and not name.startswith("celery_delayed_"):
            found[name] = QueueState(name, kind, int(ready), int(unacked), int(consumers))
    return found


def wait_for_consumer(url: str, queue: str, timeout: float = 120.0) -> None:
    """Wait until a worker consumes ``queue`` in the vhost of ``url`` (its channel is open)."""
    wait_for(
        lambda: (state := queues(url).get(queue)) is not None and state.consumers > 0,
        timeout,
        f"a worker consuming {queue}",
        interval=0.5,
    )
