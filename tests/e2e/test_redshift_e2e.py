"""A dbt-celery run on the built-in Redshift mapping: real workers, real dbt-redshift.

The session's worker processes build tests/projects/redshift_small with dbt-redshift
and its driver, against the local PostgreSQL behind the loopback proxy of
tests/redshift_proxy.py. The proxy accepts only the password the workers hold in their
environment, so the run succeeds only if each worker resolved the mapping's
``password_env`` itself; the password is then looked for everywhere the run left a trace.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from pathlib import Path
from typing import Iterator

import pytest
import redis

from dbt_celery.core.spec import RunSpec
from dbt_celery.run import submit
from tests.dbt.dbt_fixtures import drop_schemas, postgres_connection, unique_schema
from tests.helpers import copy_project
from tests.redshift_proxy import (
    REDSHIFT_SMALL_KINDS,
    REDSHIFT_SMALL_ROWS,
    RedshiftProxy,
    proxy_profile,
    schema_contents,
)

RUN_TIMEOUT = 180
#: Set for the session's workers by tests/conftest.py (worker_env), and nowhere else.
PASSWORD_ENV = "DBT_CELERY_TEST_WAREHOUSE_PASSWORD"
#: Every node of redshift_small: (status, dbt's own status, who built it).
EXPECTED_NODES = {
    "raw_orders": ("success", "success", "producer"),
    "stg_orders": ("success", "success", "producer"),
    "customer_totals": ("success", "success", "producer"),
    "orders_log": ("success", "success", "producer"),
    "unique_customer_totals_customer": ("success", "pass", "producer"),
    "not_null_customer_totals_customer": ("success", "pass", "producer"),
    "unique_orders_log_id": ("success", "pass", "producer"),
}


@pytest.fixture
def proxy(worker_env: dict[str, str]) -> Iterator[RedshiftProxy]:
    with RedshiftProxy(password=worker_env[PASSWORD_ENV]) as running:
        yield running


@pytest.fixture
def schema() -> Iterator[str]:
    name = unique_schema("dbt_celery_redshift_e2e")
    yield name
    drop_schemas(name)


def readable_forms(value: bytes) -> list[bytes]:
    """A stored value as stored, and decoded the ways dbt-celery and Celery encode payloads."""
    forms = [value]
    try:
        decoded = base64.b64decode(value, validate=True)
        forms.append(decoded)
        forms.append(zlib.decompress(decoded))
    except (binascii.Error, ValueError, zlib.error):
        pass
    return forms


def stored_values(client: redis.Redis) -> Iterator[bytes]:
    """Every value in the suite's Redis database: strings, list items, hash and set members."""
    for key in client.scan_iter():
        kind = client.type(key)
        if kind == b"string":
            yield client.get(key)
        elif kind == b"list":
            yield from client.lrange(key, 0, -1)
        elif kind == b"hash":
            yield from client.hvals(key)
        elif kind in (b"set", b"zset"):
            yield from (client.smembers(key) if kind == b"set" else client.zrange(key, 0, -1))


def test_a_run_on_the_redshift_mapping_builds_through_dbt_redshift(
    redis_workers, redis_app, redis_client, worker_env, proxy, schema, tmp_path
):
    project = copy_project("redshift_small", tmp_path)
    spec = RunSpec(project_dir=str(project), profile=proxy_profile(proxy, schema, PASSWORD_ENV))
    run = submit(spec, app=redis_app)
    status = run.wait(RUN_TIMEOUT)

    assert status.state == "success", status.to_dict()
    nodes = {node.name: (node.status, node.dbt_status, node.resolved_by) for node in status.nodes.values()}
    assert nodes == EXPECTED_NODES
    connection = postgres_connection()
    try:
        kinds, rows = schema_contents(connection, schema)
    finally:
        connection.close()
    assert kinds == REDSHIFT_SMALL_KINDS
    assert rows == REDSHIFT_SMALL_ROWS
    assert proxy.sessions > 0  # the workers' dbt reached PostgreSQL through the proxy only

    # The password never travelled: not in the spec sent, not in the broker or the result
    # store, not in the workers' logs, not in any file dbt wrote for the run.
    secret = worker_env[PASSWORD_ENV].encode()
    assert secret not in spec.to_json().encode()
    stored = [form for value in stored_values(redis_client) for form in readable_forms(value)]
    assert any(b"model.redshift_small.orders_log" in form for form in stored)  # the scan reads the records
    assert not [form for form in stored if secret in form]
    for role in redis_workers.processes:
        assert secret not in redis_workers.log_file(role).read_bytes()
    written = [path for path in Path(worker_env["DBT_CELERY_WORKSPACE_DIR"]).rglob("*") if path.is_file()]
    assert written, "the run should have left its workspace files"
    assert [path for path in written if secret in path.read_bytes()] == []
    assert [path for path in project.rglob("*") if path.is_file() and secret in path.read_bytes()] == []
