"""Redis restarts mid-run: workers reconnect, the producer's writes wait, the waiting handle rides it out."""

from __future__ import annotations

import threading
import time

from tests.faults.fault_fixtures import audited_spec, fault_app

OUTAGE = 10.0  # seconds Redis is away


def test_a_redis_restart_mid_run_loses_nothing(private_redis, audit, audited_project, fault_workers, tmp_path):
    workers = fault_workers(private_redis.url)
    app = fault_app(private_redis.url)
    from dbt_celery.run import submit

    run = submit(audited_spec(audited_project, audit, sleep=1.5, heartbeat_timeout=20, rearm_after=10), app=app)

    def restart_redis() -> None:
        while not audit.rows():
            time.sleep(0.1)
        private_redis.client().shutdown(save=True)  # a restart that keeps its data, as production Redis does
        time.sleep(OUTAGE)
        private_redis.start()

    outage = threading.Thread(target=restart_redis, daemon=True)
    outage.start()
    status = run.wait(timeout=240)  # waits through the outage without raising
    outage.join(5)

    assert status.state == "success", status.to_dict()
    assert all(process.poll() is None for process in workers.processes.values()), "a worker died with Redis"
    assert "held message" in workers.tail("consumer", 200_000)  # the restart did hit a worker holding messages
    assert set(audit.builds_per_node().values()) == {1}  # every model built exactly once
    assert audit.overlaps() == []
