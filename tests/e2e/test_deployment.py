"""docker-compose.yml's services, run here as plain processes (no Docker engine on CI).

The tests read each service from the compose file, interpolate it as compose would (with
this test's ``.env``: the Flower credentials and a short schedule), and run its command as a
local process in the repository (the image's /app). Only what differs between the compose
network and this machine is replaced: the hosts ``redis`` and ``postgres`` become 127.0.0.1
(with a Redis database of this module's own), /project a copy of the example, beat's state
folder a temporary one, the Flower port a free one, and the schema a fresh one.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import psycopg2
import pytest
import redis
import yaml
from celery.schedules import crontab

from dbt_celery.celery.config import create_app, settings_from_env
from dbt_celery.celery.queues import CONSUMER_QUEUE, CONTROL_QUEUE, FALLBACK_QUEUE, PRODUCER_QUEUE
from dbt_celery.run import DbtRun
from tests.conftest import REDIS_SERVER, free_redis_db
from tests.helpers import JAFFLE_SHOP, REPO, copy_project, wait_for

#: What this test keeps in its .env next to docker-compose.yml.
DOT_ENV = {"FLOWER_BASIC_AUTH": "dbt:not-a-real-secret", "DBT_CELERY_SCHEDULE": "2"}
#: Seconds a build of the example (27 nodes on PostgreSQL) may take on a busy machine.
PATIENCE = 240.0
_VARIABLE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def interpolate(value: Any, dot_env: dict[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}``, over a service's values."""
    if isinstance(value, dict):
        return {key: interpolate(item, dot_env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, dot_env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, kind, text = match.groups()
        if dot_env.get(name):
            return dot_env[name]
        if kind == "?":
            raise ValueError(f"required variable {name} is missing a value: {text}")
        return text or ""

    return _VARIABLE.sub(substitute, value)


def queues_of(command: list[str]) -> set[str]:
    return set(command[command.index("-Q") + 1].split(","))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_compose_file_describes_the_production_stack():
    services = compose()["services"]
    assert set(services) == {"redis", "postgres", "producer", "consumer", "beat", "flower", "example"}
    apps = {
        name: interpolate(services[name], DOT_ENV) for name in ("producer", "consumer", "beat", "flower", "example")
    }
    for name, service in apps.items():
        assert service["build"] == "."
        assert service["environment"]["CELERY_BROKER_URL"] == "redis://redis:6379/0"
        assert service["environment"]["PGHOST"] == "postgres" and service["environment"]["DBT_TARGET"] == "postgres"
        assert service["command"][:3] in (["celery", "-A", "dbt_celery"], ["dbt-celery", "run", "/project"]), name
    # The two workers split dbt-celery's queues between them, and together take every one.
    assert queues_of(apps["producer"]["command"]) == {PRODUCER_QUEUE, FALLBACK_QUEUE}
    assert queues_of(apps["consumer"]["command"]) == {CONSUMER_QUEUE, CONTROL_QUEUE}
    standalone = create_app(settings_from_env({"CELERY_BROKER_URL": "redis://redis:6379/0"}))
    assert set(standalone.amqp.queues) == {PRODUCER_QUEUE, FALLBACK_QUEUE, CONSUMER_QUEUE, CONTROL_QUEUE}
    # Beat runs with the schedule module; Flower will not start without credentials.
    assert apps["beat"]["command"][3] == "beat" and apps["beat"]["environment"]["CELERY_CONFIG_MODULE"] == "beatconfig"
    assert interpolate(services["beat"], {})["environment"]["DBT_CELERY_SCHEDULE"] == "0 2 * * *"
    with pytest.raises(ValueError, match="FLOWER_BASIC_AUTH"):
        interpolate(services["flower"], {})
    dockerfile = (REPO / "Dockerfile").read_text()
    assert '".[postgres,flower]"' in dockerfile and "ENV PYTHONPATH=/app" in dockerfile


def test_beat_settings_schedule_the_readme_entry(monkeypatch):
    monkeypatch.setenv("DBT_CELERY_PROJECT_DIR", str(JAFFLE_SHOP))
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.delitem(sys.modules, "beatconfig", raising=False)
    entry = importlib.import_module("beatconfig").beat_schedule["dbt-build"]
    monkeypatch.delitem(sys.modules, "beatconfig")
    assert entry["task"] == "dbt_celery.start_run"
    assert entry["schedule"] == crontab(minute="0", hour="2")
    assert entry["kwargs"]["overlap"] == "skip"
    assert entry["kwargs"]["spec"]["project_dir"] == entry["kwargs"]["spec"]["profiles_dir"] == str(JAFFLE_SHOP)


class LocalStack:
    """The compose services as local processes: each service's command, environment and paths mapped here."""

    def __init__(self, root: Path, redis_url: str, schema: str) -> None:
        self.services = interpolate(compose()["services"], DOT_ENV)
        self.root = root
        self.project = copy_project(JAFFLE_SHOP, root)
        self.flower_port = free_port()
        self.replacements = {
            "redis://redis:6379/0": redis_url,
            "/project": str(self.project),
            "/var/lib/celerybeat": str(root / "celerybeat"),
            "--address=0.0.0.0": "--address=127.0.0.1",
            "--port=5555": f"--port={self.flower_port}",
        }
        (root / "celerybeat").mkdir()
        self.local = {"PGHOST": "127.0.0.1", "DBT_SCHEMA": schema, "DBT_CELERY_WORKSPACE_DIR": str(root / "ws")}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def _mapped(self, value: str) -> str:
        for compose_value, local_value in self.replacements.items():
            value = value.replace(compose_value, local_value)
        return value

    def command(self, name: str) -> list[str]:
        """The service's command; ``celery`` and ``dbt-celery`` run from this interpreter."""
        program, *args = [self._mapped(arg) for arg in self.services[name]["command"]]
        runner = {"celery": ["-m", "celery"], "dbt-celery": ["-m", "dbt_celery.cli"]}[program]
        return [sys.executable, *runner, *args]

    def env(self, name: str) -> dict[str, str]:
        """This machine's environment (without Celery settings) with the service's, mapped here."""
        inherited = {key: value for key, value in os.environ.items() if not key.startswith(("CELERY_", "DBT_CELERY_"))}
        service = {key: self._mapped(str(value)) for key, value in self.services[name]["environment"].items()}
        return {**inherited, **service, **self.local, "PYTHONPATH": str(REPO)}  # the Dockerfile's PYTHONPATH

    def start(self, name: str) -> None:
        """Start a long-running service."""
        log = open(self.root / f"{name}.log", "wb")
        self.processes[name] = subprocess.Popen(
            self.command(name), cwd=REPO, env=self.env(name), stdout=log, stderr=subprocess.STDOUT
        )

    def run(self, name: str) -> subprocess.CompletedProcess[str]:
        """Run a one-shot service to its end."""
        return subprocess.run(
            self.command(name), cwd=REPO, env=self.env(name), capture_output=True, text=True, timeout=PATIENCE
        )

    def stop(self, name: str) -> None:
        """Warm shutdown of one service (killed if it lingers)."""
        process = self.processes.pop(name)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def check(self) -> None:
        """Fail with a service's log if it exited."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                pytest.fail(f"{name} exited: {(self.root / f'{name}.log').read_text(errors='replace')[-3000:]}")

    def flower(self, path: str, credentials: str | None = DOT_ENV["FLOWER_BASIC_AUTH"]) -> Any:
        """GET Flower's ``path`` (with basic auth unless ``credentials`` is None) and decode the JSON."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.flower_port}{path}")
        if credentials is not None:
            request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    """The compose stack's services on a Redis database and a PostgreSQL schema of their own."""
    redis_url = f"{REDIS_SERVER}/{free_redis_db()}"
    schema = f"compose_{uuid.uuid4().hex[:10]}"
    local = LocalStack(tmp_path, redis_url, schema)
    try:
        yield local
    finally:
        for name in list(local.processes):
            local.stop(name)
        redis.Redis.from_url(redis_url).flushdb()
        _sql(f"drop schema if exists {schema} cascade")


def test_compose_stack_builds_the_example_on_postgres_shows_it_in_flower_and_schedules_it(stack):
    for name in ("producer", "consumer", "flower"):
        stack.start(name)
    _wait_for(lambda: stack.flower("/api/workers"), stack)
    time.sleep(1.0)  # let Flower's event receiver attach before tasks are sent

    # The one-shot service: the README's main command, on the stack's workers and warehouse.
    example = stack.run("example")
    assert example.returncode == 0, example.stderr[-3000:]
    assert re.search(r"dbt-celery run [0-9a-f-]{36}: success", example.stdout + example.stderr)
    assert _count(stack.local["DBT_SCHEMA"], "customers") == 50
    assert _count(stack.local["DBT_SCHEMA"], "orders") == 200

    # Flower shows one task per node under its node's name, to whoever has the credentials only.
    with pytest.raises(urllib.error.HTTPError) as refused:
        stack.flower("/api/tasks", credentials=None)
    assert refused.value.code == 401
    expected = {"dbt model customers", "dbt seed raw_orders", "dbt snapshot orders_snapshot"}
    tasks = _wait_for(lambda: _flower_states(stack, expected), stack)
    assert any(name.startswith("dbt build") for name in tasks)

    # Beat starts the same build on its schedule (every 2 s here, from .env); the run succeeds.
    stack.start("beat")
    app = create_app(settings_from_env(stack.env("producer")))
    client = redis.Redis.from_url(stack.replacements["redis://redis:6379/0"])
    run_id = _wait_for(lambda: _started_by_beat(client), stack)
    stack.stop("beat")
    status = DbtRun.restore(run_id, app=app).wait(PATIENCE)
    assert status.state == "success", status.to_dict()
    assert len(status.nodes) == 27


def _count(schema: str, table: str) -> int:
    return int(_sql(f"select count(*) from {schema}.{table}")[0][0])


def _sql(query: str) -> list[tuple[Any, ...]]:
    """Run one statement on the compose warehouse's database (PGDATABASE: postgres) here."""
    connection = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(query)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def _flower_states(stack: LocalStack, expected: set[str]) -> dict[str, str] | None:
    tasks = stack.flower("/api/tasks")
    states = {task["name"]: task["state"] for task in tasks.values() if task.get("name")}
    return states if expected <= set(states) and all(states[name] == "SUCCESS" for name in expected) else None


def _started_by_beat(client: redis.Redis) -> str | None:
    """The run id of a start_run result that started a run, if beat's tick has one yet."""
    for key in client.scan_iter("celery-task-meta-*"):
        meta = json.loads(client.get(key))
        result = meta.get("result")
        started = isinstance(result, dict) and set(result) == {"run_id", "skipped", "reason", "cancelled"}
        if meta["status"] == "SUCCESS" and started and result["run_id"]:
            return str(result["run_id"])
    return None


def _wait_for(read: Any, stack: LocalStack, timeout: float = PATIENCE) -> Any:
    """Call ``read`` until it returns something (a server not listening yet counts as not yet)."""
    return wait_for(
        read, timeout, "the stack", check=stack.check, interval=0.5, tolerate=(OSError,), accept=lambda v: v is not None
    )


def test_a_plain_worker_takes_every_queue_as_the_cli_hint_says(tmp_path):
    """No worker yet: the CLI names the worker command; that command, run as printed, builds the run."""
    redis_url = f"{REDIS_SERVER}/{free_redis_db()}"
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("CELERY_", "DBT_CELERY_"))},
        "CELERY_BROKER_URL": redis_url,
        "CELERY_CONFIG_MODULE": "dbt_celery.celery.no_config",
        "DBT_CELERY_WORKSPACE_DIR": str(tmp_path / "ws"),
    }
    project = copy_project("watcher", tmp_path)
    profile = json.dumps({"type": "duckdb", "path": str(tmp_path / "w.duckdb")})
    # The real CLI, told to give its hint after 1 s instead of 30.
    code = "import sys, dbt_celery.cli as cli; cli.QUEUED_HINT_AFTER = 1.0; sys.exit(cli.main())"
    arguments = ["run", str(project), "--select", "base", "side", "--profile-json", profile]
    cli = subprocess.Popen(
        [sys.executable, "-c", code, *arguments], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    worker = None
    try:
        said = []
        for line in cli.stderr:
            said.append(line)
            if said[-2:-1] == ["Start a worker for every queue, in this environment:\n"]:
                break
        assert "still queued after 1 s: no worker has taken it from queue dbt_celery.producer" in "".join(said), said
        command = shlex.split(said[-1])
        assert command == ["celery", "-A", "dbt_celery", "worker"]  # no -Q: the app declares every queue
        with open(tmp_path / "worker.log", "wb") as log:
            worker = subprocess.Popen([sys.executable, "-m", *command], env=env, stdout=log, stderr=subprocess.STDOUT)
        out, err = cli.communicate(timeout=PATIENCE)
        assert cli.returncode == 0, "".join(said) + err + (tmp_path / "worker.log").read_text()[-3000:]
        assert re.search(r"base\s+│ model\s+│ success", out + err)
        with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as connection:
            assert connection.execute("select count(*) from side").fetchone()[0] > 0
    finally:
        for process in (cli, worker):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(30)
        redis.Redis.from_url(redis_url).flushdb()
