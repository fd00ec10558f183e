"""What a consumer worker remembers between deliveries (no broker, no store)."""

from __future__ import annotations


def test_a_worker_remembers_the_consumer_tasks_it_ended_up_to_a_bound(monkeypatch):
    from dbt_celery.celery import consumer

    monkeypatch.setattr(consumer, "_ENDED", type(consumer._ENDED)())
    monkeypatch.setattr(consumer, "ENDED_KEPT", 3)
    assert not consumer.ended_here("t1") and not consumer.ended_here(None)
    for task_id in ("t1", "t2", "t3", "t4"):
        consumer._remember_ended(task_id)
    assert [consumer.ended_here(t) for t in ("t1", "t2", "t3", "t4")] == [False, True, True, True]
