"""docker-compose.yml's services, run here as plain processes (no Docker engine on CI).

The test reads each service's command from the compose file, runs it against the local
Redis, builds a project through it, and checks what Flower shows: one task per dbt
node under its node's name.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from dbt_celery.celery.config import create_app, settings_from_env
from dbt_celery.core.spec import RunSpec
from dbt_celery.run import submit
from tests.helpers import REPO, copy_project

REDIS_URL = "redis://127.0.0.1:6379/6"


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_compose_file_describes_the_production_stack():
    services = compose()["services"]
    assert set(services) == {"redis", "producer", "consumer", "flower"}
    for name in ("producer", "consumer", "flower"):
        environment = services[name]["environment"]
        assert environment["CELERY_BROKER_URL"].startswith("redis://redis:6379")
        assert services[name]["command"][:3] == ["celery", "-A", "dbt_celery"]
    assert "dbt_celery.producer" in " ".join(services["producer"]["command"])
    assert "dbt_celery.consumer" in " ".join(services["consumer"]["command"])


def test_compose_services_build_a_project_visible_in_flower(tmp_path):
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    port = free_port()
    env = {
        **os.environ,
        "CELERY_BROKER_URL": REDIS_URL,
        "CELERY_RESULT_BACKEND": REDIS_URL,
        "CELERY_CONFIG_MODULE": "dbt_celery.celery.no_config",
        "DBT_CELERY_WORKSPACE_DIR": str(tmp_path / "ws"),
        "FLOWER_UNAUTHENTICATED_API": "true",
    }
    processes = []
    for name in ("producer", "consumer", "flower"):
        command = compose()["services"][name]["command"]
        command = [
            arg.replace("--address=0.0.0.0", "--address=127.0.0.1").replace("--port=5555", f"--port={port}")
            for arg in command
        ]
        log = open(tmp_path / f"{name}.log", "wb")
        processes.append(
            subprocess.Popen([sys.executable, "-m", *command], env=env, stdout=log, stderr=subprocess.STDOUT)
        )
    try:
        _wait_for_http(f"http://127.0.0.1:{port}/api/workers", 60)
        time.sleep(1.0)  # let Flower's event receiver attach before tasks are sent
        app = create_app(settings_from_env(env))
        project = copy_project("watcher", tmp_path)
        spec = RunSpec(
            project_dir=str(project), profile={"type": "duckdb", "path": str(tmp_path / "w.duckdb")}, select=("+side",)
        )
        status = submit(spec, app=app).wait(120)
        assert status.state == "success", status.to_dict()
        tasks = _flower_tasks(port, expected={"dbt model side", "dbt model base", "dbt test not_null_side_id"})
        assert tasks["dbt model side"] == "SUCCESS"
        assert tasks["dbt model base"] == "SUCCESS"
        assert any(name.startswith("dbt build") for name in tasks)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def _flower_tasks(port: int, expected: set[str]) -> dict[str, str]:
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/tasks") as response:
            tasks = json.load(response)
        states = {task["name"]: task["state"] for task in tasks.values() if task.get("name")}
        if expected <= set(states) and all(states[name] == "SUCCESS" for name in expected):
            return states
        if time.monotonic() > deadline:
            pytest.fail(f"Flower never showed {expected} as SUCCESS; it shows {states}")
        time.sleep(0.5)


def _wait_for_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout} s")
