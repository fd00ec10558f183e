"""RabbitMQ as the broker (Redis as the store): a build longer than ``consumer_timeout`` goes through.

Consumers wait by sending themselves a new countdown message every poll, so no consumer
message is held long; the producer worker, busy with the build, holds the run's watchdog
countdown. The test lowers RabbitMQ's ``consumer_timeout`` to 8 s (restored afterwards), in
a vhost of its own, and builds for longer than that.
"""

from __future__ import annotations

import subprocess
import uuid
from typing import Iterator

import pytest

from tests.faults.fault_fixtures import audited_spec

CONSUMER_TIMEOUT_MS = 8_000


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.fixture
def rabbit_vhost() -> Iterator[str]:
    """A vhost of this test only, with RabbitMQ's consumer_timeout lowered while it lives."""
    try:
        before = rabbitmqctl("eval", "application:get_env(rabbit, consumer_timeout).").strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"RabbitMQ is not reachable with rabbitmqctl: {exc}")
    vhost = f"dbt-celery-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    rabbitmqctl("eval", f"application:set_env(rabbit, consumer_timeout, {CONSUMER_TIMEOUT_MS}).")
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        previous = before.removeprefix("{ok,").removesuffix("}") if before.startswith("{ok,") else "1800000"
        rabbitmqctl("eval", f"application:set_env(rabbit, consumer_timeout, {previous}).")
        rabbitmqctl("delete_vhost", vhost)


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
    from celery import Celery

    from dbt_celery.celery.config import create_app, settings_from_env
    from dbt_celery.run import submit

    app: Celery = create_app(
        settings_from_env({"CELERY_BROKER_URL": rabbit_vhost, "CELERY_RESULT_BACKEND": private_redis.url})
    )
    spec = audited_spec(audited_project, audit, sleep=3.0, threads=1, rearm_after=30)  # about 21 s of building
    run = submit(spec, app=app)
    status = run.wait(timeout=180)

    assert status.state == "success", status.to_dict()
    assert all(process.poll() is None for process in workers.processes.values()), "a worker exited"
    assert set(audit.builds_per_node().values()) == {1}
    assert audit.overlaps() == []
