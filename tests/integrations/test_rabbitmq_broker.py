"""RabbitMQ as the broker, Redis as the result backend: the watcher end to end, on classic and quorum queues.

Each queue type gets its own private vhost and its own producer and consumer workers
(real ``celery worker`` processes), started once for the module. Quorum queues are
declared by ``CELERY_TASK_DEFAULT_QUEUE_TYPE=quorum`` on direct exchanges, so countdowns
stay off Celery's native delayed delivery: the last tests show why (what that delivery
changes in a message), and what a quorum worker's prefetch must hold instead.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest
from celery import Celery
from kombu import Connection, Exchange, Queue
from kombu.transport.native_delayed_delivery import (
    bind_queue_to_native_delayed_delivery_exchange,
    declare_native_delayed_delivery_exchanges_and_queues,
)

from dbt_celery.celery.backends import store_for
from dbt_celery.celery.config import create_app, settings_from_env
from dbt_celery.celery.queues import CONSUMER_QUEUE, CONTROL_QUEUE, FALLBACK_QUEUE, PRODUCER_QUEUE
from dbt_celery.celery.workers import LocalWorkers
from dbt_celery.run import submit
from tests.e2e.test_watcher import repair_a_transient_failure, tables, watcher_spec
from tests.helpers import copy_project
from tests.rabbitmq import private_vhost, queues

RUN_TIMEOUT = 180
#: About four seconds of DuckDB work per slow model: far longer than the consumers' idle wait below.
SLOW_ROWS = 1_000_000_000
DBT_CELERY_QUEUES = {PRODUCER_QUEUE, CONSUMER_QUEUE, FALLBACK_QUEUE, CONTROL_QUEUE}


class Rabbit(NamedTuple):
    """A private vhost with dbt-celery's workers on it, and an app as a user's process would have."""

    url: str
    queue_type: str
    app: Celery
    workers: LocalWorkers


@contextmanager
def rabbit_workers(
    queue_type: str, worker_env: dict[str, str], redis_url: str, log_dir: Path, consumer_pool: list[str] | None = None
) -> Iterator[Rabbit]:
    """Workers on a private vhost whose dbt-celery queues are of ``queue_type``; the store is the suite's Redis DB."""
    with private_vhost() as url:
        env = {
            **worker_env,
            "CELERY_BROKER_URL": url,
            "CELERY_RESULT_BACKEND": redis_url,
            "CELERY_TASK_DEFAULT_QUEUE_TYPE": queue_type,
        }
        workers = LocalWorkers(env, log_dir)
        if consumer_pool is not None:
            queue_names, _, preload = workers.roles["consumer"]
            workers.roles["consumer"] = (queue_names, consumer_pool, preload)
        with workers:
            yield Rabbit(url, queue_type, create_app(settings_from_env(env)), workers)


@pytest.fixture(scope="module", params=["classic", "quorum"])
def rabbit(request, worker_env, redis_url, tmp_path_factory) -> Iterator[Rabbit]:
    """The module's workers on RabbitMQ, one set per queue type."""
    log_dir = tmp_path_factory.mktemp(f"rabbit-{request.param}-logs")
    with rabbit_workers(request.param, worker_env, redis_url, log_dir) as rabbit:
        yield rabbit


def assert_broker_kept_to_its_queues(rabbit: Rabbit) -> None:
    """Every message went to one of dbt-celery's queues, each of the configured type."""
    found = queues(rabbit.url)
    assert set(found) <= DBT_CELERY_QUEUES, f"messages went to queues nobody consumes: {set(found) - DBT_CELERY_QUEUES}"
    assert {state.type for state in found.values()} == {rabbit.queue_type}, found


def test_a_run_whose_consumers_wait_passes(rabbit, tmp_path):
    project = copy_project("watcher", tmp_path)
    # The idle wait is far shorter than a slow model: consumers run, find no record and send
    # themselves again with a countdown (held by the worker) until dbt reports their node.
    spec = watcher_spec(
        project, tmp_path / "w.duckdb", select=("+slow_a+",), vars={"slow_rows": SLOW_ROWS}, idle_wait=1.5
    )
    run = submit(spec, app=rabbit.app)
    status = run.wait(RUN_TIMEOUT)

    assert status.state == "success", status.to_dict()
    assert {node.name: (node.status, node.resolved_by) for node in status.nodes.values()} == {
        name: ("success", "producer") for name in ("base", "slow_a", "slow_b")
    }
    assert {"base", "slow_a", "slow_b"} <= tables(tmp_path / "w.duckdb")
    outcomes = store_for(rabbit.app).outcomes(run.id, status.nodes)
    assert outcomes["model.watcher.slow_a"].polls >= 1, "slow_a's consumer never had to wait"
    assert all(outcome.retries == 0 for outcome in outcomes.values())
    assert all(result.state == "SUCCESS" for result in run.results().results)
    assert_broker_kept_to_its_queues(rabbit)


def test_a_transient_failure_is_repaired_by_the_fallback(rabbit, tmp_path):
    repair_a_transient_failure(rabbit.app, copy_project("watcher", tmp_path), tmp_path, check=rabbit.workers.check)
    assert_broker_kept_to_its_queues(rabbit)


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_a_quorum_workers_prefetch_must_hold_the_waiting_messages(queue_type, worker_env, redis_url, tmp_path):
    # One consumer thread with a prefetch multiplier of 1: the worker may hold one unacked
    # message. The root's consumer is sent before dbt reaches it with an idle wait of an
    # hour, and the worker holds it until then; the producer's wake-up message comes next.
    # On a classic queue Celery raises the channel's prefetch for each countdown it holds;
    # on a quorum queue the prefetch is per consumer and fixed, so the wake-up stays queued.
    with rabbit_workers(
        queue_type, worker_env, redis_url, tmp_path / "logs", ["-P", "threads", "-c", "1", "--prefetch-multiplier", "1"]
    ) as rabbit:
        project = copy_project("watcher", tmp_path)
        spec = watcher_spec(project, tmp_path / "w.duckdb", select=("base",), idle_wait=3600.0, rearm_after=4 * 3600.0)
        run = submit(spec, app=rabbit.app)
        store = store_for(rabbit.app)
        if queue_type == "classic":
            status = run.wait(RUN_TIMEOUT)
            assert status.state == "success", status.to_dict()
            assert status.nodes["model.watcher.base"].status == "success"
            return
        deadline = time.monotonic() + RUN_TIMEOUT
        while (producer := store.producer(run.id)) is None or not producer.ended:
            assert time.monotonic() < deadline, "the producer never finished"
            rabbit.workers.check()
            time.sleep(0.2)
        assert store.node_event(run.id, "model.watcher.base") is not None  # dbt built it and said so
        # The hour-long countdown holds the only slot; the wake-up waits behind it. A quorum
        # queue's counts come from its leader a moment after the publish: wait for them.
        while (consumer := queues(rabbit.url)[CONSUMER_QUEUE]).ready == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (consumer.unacked, consumer.ready) == (1, 1), consumer
        time.sleep(3)  # a worker that could take the wake-up has had ample time to
        assert store.outcomes(run.id, ["model.watcher.base"]) == {}  # no consumer resolved the node
        assert run.status().state == "running"
        assert queues(rabbit.url)[CONSUMER_QUEUE].ready == 1
        run.cancel()


def test_native_delayed_delivery_changes_what_a_consumer_reads(tmp_path):
    """Quorum queues on topic exchanges: Celery routes countdowns through RabbitMQ's dead-lettering.

    dbt-celery's consumer could not use it as it stands: a countdown under a second is
    refused when sent, the message comes back under a longer routing key (the consumer
    re-sends itself to the routing key it came by), and with broker headers that hold
    timestamps (the consumer copies its headers into JSON). So dbt-celery declares quorum
    queues on direct exchanges, where the worker holds the countdown itself.
    """
    with private_vhost() as url:
        name = "dbt_celery.consumer"
        exchange = Exchange(name, type="topic")
        queue = Queue(name, exchange, routing_key=name, queue_arguments={"x-queue-type": "quorum"})
        app = Celery("delayed", set_as_current=False)
        app.conf.update(broker_url=url, task_queues=[queue], task_serializer="json", accept_content=["json"])
        with Connection(url) as connection:
            declare_native_delayed_delivery_exchanges_and_queues(connection, "quorum")
            queue(connection.default_channel).declare()
            bind_queue_to_native_delayed_delivery_exchange(connection, queue)

            with pytest.raises(ValueError, match="countdown must be a positive number"):
                app.send_task("dbt_celery.consume", kwargs={}, countdown=0.5, queue=name)
            app.send_task("dbt_celery.consume", kwargs={}, countdown=1.0, queue=name)

            bound = queue(connection.default_channel)
            deadline = time.monotonic() + 30
            while (message := bound.get(no_ack=True)) is None:
                assert time.monotonic() < deadline, "the delayed message never arrived"
                time.sleep(0.2)
    routing_key = message.delivery_info["routing_key"]
    assert routing_key != name and routing_key.endswith(f".{name}"), routing_key
    deaths = message.headers["x-death"]
    assert deaths and any(not isinstance(death["time"], (str, int, float)) for death in deaths), deaths


def test_an_unknown_queue_type_is_refused_at_configuration():
    from dbt_celery.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="CELERY_TASK_DEFAULT_QUEUE_TYPE"):
        settings_from_env({"CELERY_BROKER_URL": "amqp://127.0.0.1//", "CELERY_TASK_DEFAULT_QUEUE_TYPE": "stream"})
