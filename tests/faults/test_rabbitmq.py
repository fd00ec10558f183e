"""RabbitMQ as the broker (Redis as the store): a build longer than ``consumer_timeout`` goes through.

The producer worker, busy with the build, holds the run's watchdog countdown (15 s), and the
consumer worker holds the consumers' waiting copies (the idle wait, 30 s). The test lowers
RabbitMQ's ``consumer_timeout`` to 8 s (restored afterwards), in a vhost of its own, and
builds for longer than that: both workers lose their channel, reconnect, and the run goes through.

RabbitMQ checks that timeout on each channel's tick (``channel_tick_interval``, 60 s by
default), so a lowered timeout is only enforced seconds after it passes if the tick is
lowered as well: these tests lower it to 1 s while they run (and put it back).

The last test shows the rule behind it: the consumer worker holds each countdown message
unacknowledged until it is due, so ``consumer_timeout`` must exceed the longest countdown,
the idle wait ``min(idle_wait, rearm_after / 3)`` above all (docs/rabbitmq.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from dbt_celery.celery.config import create_app, settings_from_env
from dbt_celery.celery.queues import CONSUMER_QUEUE, PRODUCER_QUEUE
from dbt_celery.celery.workers import LocalWorkers
from dbt_celery.core.plan import consumer_task_id
from dbt_celery.run import submit
from tests.faults.fault_fixtures import audited_spec, fault_env
from tests.helpers import wait_for
from tests.rabbitmq import broker_setting, private_vhost, wait_for_consumer

CONSUMER_TIMEOUT_MS = 8_000
#: How often RabbitMQ checks a channel's deliveries against consumer_timeout while these tests run.
TICK_MS = 1_000
#: What RabbitMQ writes into the channel error when it closes a channel for a late acknowledgement.
ACK_TIMED_OUT = "delivery acknowledgement on channel"


@pytest.fixture
def rabbit_vhost() -> Iterator[str]:
    """A vhost of this test only, with RabbitMQ's consumer_timeout lowered (and enforced) while it lives."""
    with broker_setting("channel_tick_interval", TICK_MS), private_vhost() as url:
        with broker_setting("consumer_timeout", CONSUMER_TIMEOUT_MS):
            yield url


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_a_build_longer_than_consumer_timeout_on_rabbitmq(
    pool, rabbit_vhost, private_redis, audit, audited_project, fault_workers, monkeypatch
):
    # A prefork producer worker (the docker-compose setup) keeps receiving while its child
    # builds, so it holds the watchdog's countdown message through the whole build.
    from dbt_celery.celery import workers as local_workers

    queues, _, preload = local_workers.ROLES["producer"]
    monkeypatch.setitem(local_workers.ROLES, "producer", (queues, ["-P", pool, "-c", "1"], preload))
    workers = fault_workers(private_redis.url, CELERY_BROKER_URL=rabbit_vhost, CELERY_RESULT_BACKEND=private_redis.url)
    app = create_app(settings_from_env({"CELERY_BROKER_URL": rabbit_vhost, "CELERY_RESULT_BACKEND": private_redis.url}))
    spec = audited_spec(audited_project, audit, sleep=3.0, threads=1, rearm_after=30)  # about 21 s of building
    run = submit(spec, app=app)
    status = run.wait(timeout=180)

    assert status.state == "success", status.to_dict()
    _wait_for_text(workers.log_file("producer"), ACK_TIMED_OUT, workers)  # the watchdog's countdown outlived it
    assert all(process.poll() is None for process in workers.processes.values()), "a worker exited"
    assert set(audit.builds_per_node().values()) == {1}
    assert audit.overlaps() == []


def test_a_countdown_held_past_consumer_timeout_costs_the_worker_its_channel(
    private_redis, audit, audited_project, tmp_path
):
    # The consumer worker's channel opens while consumer_timeout is 4 s (a channel keeps the
    # value it opened with); the producer worker's opened before, with the broker's own.
    env = {
        **fault_env(private_redis.url, tmp_path / "workspaces"),
        "CELERY_BROKER_URL": "",  # set below, once the vhost exists
        "CELERY_RESULT_BACKEND": private_redis.url,
    }
    with broker_setting("channel_tick_interval", TICK_MS), private_vhost() as url:
        env["CELERY_BROKER_URL"] = url
        (tmp_path / "logs").mkdir()
        workers = LocalWorkers(env, tmp_path / "logs")
        try:
            workers.start("producer")
            wait_for_consumer(url, PRODUCER_QUEUE)
            with broker_setting("consumer_timeout", 4_000):
                workers.start("consumer")
                wait_for_consumer(url, CONSUMER_QUEUE)
            app = create_app(settings_from_env(env))
            consumer_log = workers.log_file("consumer")

            # Recommended: every countdown (here the idle wait of 2 s) shorter than consumer_timeout.
            # The build takes about 7 s: the consumers wait through it, each countdown held 2 s at most.
            short = submit(audited_spec(audited_project, audit, sleep=1.0, threads=1, idle_wait=2.0), app=app)
            assert short.wait(timeout=180).state == "success"
            assert ACK_TIMED_OUT not in consumer_log.read_text(errors="replace")

            # An idle wait of 12 s: the root's waiting copy, left behind once the producer woke
            # the node, stays unacknowledged for 12 s, and RabbitMQ closes the worker's channel.
            long = submit(audited_spec(audited_project, audit, sleep=0.2, threads=1, idle_wait=12.0), app=app)
            long_status = long.wait(timeout=180)
            assert long_status.state == "success"
            # RabbitMQ checks on its channel ticks; on a loaded machine (two pytest processes) it took over a minute.
            _wait_for_text(consumer_log, ACK_TIMED_OUT, workers, timeout=180.0)
            # The messages the closed channel held went back to the queue and come to the worker
            # again, once it has reconnected (which on a busy machine takes a while after the loss).
            copies = [f"[{consumer_task_id(long.id, uid)}] received" for uid in long_status.nodes]
            _wait_until(
                lambda: any(c in consumer_log.read_text(errors="replace").split(ACK_TIMED_OUT, 1)[1] for c in copies),
                "no held copy came back to the reconnected worker",
                workers,
            )
            # broker_channel_error_retry: the worker reconnected, and the redelivered copies did no harm.
            again = submit(audited_spec(audited_project, audit, sleep=0.2, threads=1, idle_wait=2.0), app=app)
            assert again.wait(timeout=180).state == "success"
            workers.check()
            assert set(audit.builds_per_node().values()) == {3}  # each run built each node once
        finally:
            workers.stop()


def _wait_for_text(path: Path, text: str, workers: LocalWorkers, timeout: float = 60.0) -> None:
    _wait_until(lambda: text in path.read_text(errors="replace"), f"{text!r} in {path.name}", workers, timeout)


def _wait_until(condition, what: str, workers: LocalWorkers, timeout: float = 60.0) -> None:
    wait_for(condition, timeout, what, check=workers.check, interval=0.5)
