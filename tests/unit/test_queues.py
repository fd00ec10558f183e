"""Which queues the standalone app declares and routes to, and the worker commands the CLI names."""

from __future__ import annotations

from celery import Celery

from dbt_celery.celery.config import create_app, settings_from_env
from dbt_celery.celery.queues import CONSUMER_QUEUE, CONTROL_QUEUE, FALLBACK_QUEUE, PRODUCER_QUEUE, worker_commands

BROKER = {"CELERY_BROKER_URL": "redis://127.0.0.1:6379/0"}


def test_a_plain_standalone_worker_consumes_every_queue_each_on_its_own_exchange():
    app = create_app(settings_from_env(BROKER))
    consumed = app.amqp.queues.consume_from
    assert set(consumed) == {PRODUCER_QUEUE, CONSUMER_QUEUE, FALLBACK_QUEUE, CONTROL_QUEUE}
    for name, queue in consumed.items():  # as Celery declares a queue it creates on demand
        assert (queue.exchange.name, queue.exchange.type, queue.routing_key) == (name, "direct", name)


def test_starts_go_to_the_control_queue_and_renamed_queues_are_declared():
    app = create_app(
        settings_from_env({**BROKER, "DBT_CELERY_CONTROL_QUEUE": "ops", "DBT_CELERY_PRODUCER_QUEUE": "dbt"})
    )
    assert app.amqp.router.route({}, "dbt_celery.start_run")["queue"].name == "ops"
    assert set(app.amqp.queues.consume_from) == {"dbt", CONSUMER_QUEUE, FALLBACK_QUEUE, "ops"}


def test_the_standalone_app_needs_one_plain_worker_or_the_production_pair():
    assert worker_commands(create_app(settings_from_env(BROKER)), "dbt_celery") == [
        "celery -A dbt_celery worker",
        "celery -A dbt_celery worker -Q dbt_celery.producer,dbt_celery.fallback -c 1 -E",
        "celery -A dbt_celery worker -Q dbt_celery.consumer,dbt_celery.control -P threads -c 4 -E",
    ]


def test_a_users_app_on_its_default_queue_needs_its_plain_worker():
    assert worker_commands(Celery("shop", broker="memory://"), "shop.celery:app") == [
        "celery -A shop.celery:app worker"
    ]


def test_a_users_app_with_a_queue_its_plain_worker_does_not_consume_names_every_queue():
    app = Celery("shop", broker="memory://")
    app.conf.dbt_celery_producer_queue = "dbt"
    assert worker_commands(app, "shop.celery:app") == ["celery -A shop.celery:app worker -Q dbt,celery"]
