"""Slim runs and source freshness, against plain dbt on the same flags.

* ``state:modified+`` with ``--defer --favor-state`` against a production build on
  PostgreSQL: the changed model fails once and its consumer rebuilds it inline; the
  rebuilds defer to production for what the run did not select, and read the run's own
  relations for what it did, exactly as the build does.
* ``RunSpec(source_freshness=True)`` on DuckDB: nodes that read a stale source (directly
  or through an ephemeral model) end ``skipped`` naming the source; everything else ends
  as in a plain ``dbt build`` that leaves those nodes out.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dbt_celery.celery.backends import store_for
from dbt_celery.conformance import compare, differences, reference_statuses
from dbt_celery.core.records import NodeState
from dbt_celery.core.spec import RunSpec
from dbt_celery.dbt.commands import Workspace, build_command
from dbt_celery.dbt.invocation import DbtInvocation
from dbt_celery.run import DbtRun, submit
from tests.e2e.test_conformance import RUN_TIMEOUT, by_name, duckdb_spec, wait_for_failure, warehouse
from tests.faults.fault_fixtures import POSTGRES, postgres_connection
from tests.helpers import copy_project

SLIM = "conformance/slim"
FRESHNESS = "conformance/freshness"

# The change under test: the total doubles, and the model reads a gate table the test opens.
CHANGED_TOTALS = (
    "select sum(amount) * 2 as total from {{ ref('orders') }} where 1 / (select count(*) from {{ var('gate') }}) = 1\n"  # noqa: E501
)


def postgres_spec(project: Path, schema: str, **options: Any) -> RunSpec:
    return RunSpec(project_dir=str(project), profile={**POSTGRES, "type": "postgres", "schema": schema}, **options)


def relations(schema: str) -> dict[str, int]:
    """Every table of a PostgreSQL schema with its row count."""
    connection = postgres_connection()
    try:
        cursor = connection.cursor()
        cursor.execute("select table_name from information_schema.tables where table_schema = %s", (schema,))
        names = sorted(row[0] for row in cursor.fetchall())
        counts = {}
        for name in names:
            cursor.execute(f'select count(*) from "{schema}"."{name}"')
            counts[name] = cursor.fetchone()[0]
        return counts
    finally:
        connection.close()


def query(sql: str) -> list[tuple[Any, ...]]:
    connection = postgres_connection()
    try:
        cursor = connection.cursor()
        cursor.execute(sql)
        return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


@pytest.fixture
def schema_prefix():
    """A unique prefix for this test's PostgreSQL schemas, all dropped at teardown."""
    prefix = f"slim_{uuid.uuid4().hex[:8]}"
    yield prefix
    schemas = query(f"select schema_name from information_schema.schemata where schema_name like '{prefix}%'")
    for (schema,) in schemas:
        query(f'drop schema "{schema}" cascade')


@pytest.mark.timeout(3 * RUN_TIMEOUT + 60)
@pytest.mark.parametrize("mode", ["in_process", "subprocess"])
def test_state_modified_with_defer_builds_what_changed_and_reads_production_for_the_rest(
    redis_workers, redis_app, tmp_path, schema_prefix, mode
):
    project = copy_project(SLIM, tmp_path)
    production = postgres_spec(project, f"{schema_prefix}_prod")
    workspace = Workspace.create(production, "slim-production", "build")
    built = DbtInvocation(build_command(production, workspace), mode="subprocess", cwd=project)
    built.run()
    assert built.success, built.error
    state = workspace.target_path  # production's manifest.json

    (project / "models" / "order_totals.sql").write_text(CHANGED_TOTALS)
    gates = f"{schema_prefix}_gates"
    query(f'create schema "{gates}"; create table "{gates}".open (x int); insert into "{gates}".open values (1);')
    query(f'create table "{gates}".shut (x int)')
    slim = {"state": str(state), "defer": True, "favor_state": True, "select": ("state:modified+",)}

    reference = postgres_spec(project, f"{schema_prefix}_ref", vars={"gate": f"{gates}.open"}, **slim)
    expected = reference_statuses(reference)
    assert set(by_name(expected)) == {
        ("model", "order_totals"),
        ("model", "order_report"),
        ("test", "not_null_order_totals_total"),
        ("test", "not_null_order_report_total"),
    }
    assert set(expected.values()) == {"success", "pass"}

    # dbt-celery on the same flags, its gate shut: the changed model fails, then the gate
    # opens and the model's retry rebuilds it inline, its child and tests after it.
    candidate = postgres_spec(
        project, f"{schema_prefix}_cand", vars={"gate": f"{gates}.shut"}, retries=1, retry_delay=3.0,
        invocation=mode, **slim,
    )  # fmt: skip
    run = submit(candidate, app=redis_app)
    wait_for_failure(store_for(redis_app), run.id, "model.slim.order_totals")
    query(f'insert into "{gates}".shut values (1)')
    status = run.wait(RUN_TIMEOUT)
    got = {uid: {"status": node.status.value, "dbt_status": node.dbt_status} for uid, node in status.nodes.items()}
    assert differences(expected, got) == []
    assert {uid for uid, node in status.nodes.items() if node.resolved_by == "fallback"} == set(expected)

    # Only what changed was built in development; both read production's orders (deferred)
    # and the report reads the run's own doubled total, not production's.
    assert (
        relations(f"{schema_prefix}_cand")
        == relations(f"{schema_prefix}_ref")
        == {
            "order_totals": 1,
            "order_report": 1,
        }
    )
    assert query(f'select total from "{schema_prefix}_cand".order_report') == [(60,)]
    assert query(f'select total from "{schema_prefix}_prod".order_report') == [(30,)]


# -- source freshness -----------------------------------------------------------------------------
STALE_SKIPPED = {
    ("model", "legacy_events"),
    ("test", "not_null_legacy_events_id"),
    ("model", "combined"),
    ("test", "not_null_combined_id"),
    ("model", "legacy_summary"),  # through the ephemeral legacy_ephemeral
}
# A source whose freshness cannot be checked (its loaded_at_field does not exist) counts as stale too.
UNCHECKABLE_SKIPPED = {("model", "broken_events")}


def raw_tables(db: Path) -> None:
    """The sources' tables: live loaded now, lagging two days ago, legacy in 2020, broken and unchecked unknown."""
    loaded = {
        "live": "current_timestamp::timestamp",
        "lagging": "current_timestamp::timestamp - interval 2 day",
        "legacy": "timestamp '2020-01-01 00:00:00'",
        "broken": "current_timestamp::timestamp",
        "unchecked": "null",
    }
    with duckdb.connect(str(db)) as connection:
        for source, moment in loaded.items():
            connection.execute(f"create schema raw_{source}")
            connection.execute(f"create table raw_{source}.events as select 1 as id, {moment} as loaded_at")


@pytest.mark.timeout(2 * RUN_TIMEOUT + 60)
@pytest.mark.parametrize("mode", ["in_process", "subprocess"])
def test_source_freshness_skips_what_reads_a_stale_source(redis_workers, redis_app, tmp_path, mode):
    project = copy_project(FRESHNESS, tmp_path)
    for db in ("reference.duckdb", "candidate.duckdb"):
        raw_tables(tmp_path / db)
    # Plain dbt's way to the same build: leave out everything below the stale source.
    reference = duckdb_spec(project, tmp_path / "reference.duckdb", exclude=("source:legacy+", "source:broken+"))
    candidate = duckdb_spec(project, tmp_path / "candidate.duckdb", invocation=mode, retries=0, source_freshness=True)
    report = compare(reference, candidate, app=redis_app, timeout=RUN_TIMEOUT)

    assert report.reference and set(report.reference.values()) == {"success", "pass"}
    assert ("model", "lagging_events") in by_name(report.reference)  # warn_after passed: still built
    skipped = {d.unique_id for d in report.differences}
    assert set(by_name({uid: "" for uid in skipped})) == STALE_SKIPPED | UNCHECKABLE_SKIPPED
    assert all(d.reference is None and d.candidate == "skipped" for d in report.differences), report.differences
    # Every difference is one of those skips: on the nodes both built, zero differences.
    run = DbtRun(report.run_id, redis_app)
    nodes = run.status().nodes
    consumers = run.results()
    assert consumers is not None and {result.state for result in consumers.results} == {"SUCCESS"}  # a skip passes
    for uid in skipped:
        assert nodes[uid].status is NodeState.SKIPPED and nodes[uid].dbt_status == "skipped"
        source = "broken.events" if uid == "model.freshness.broken_events" else "legacy.events"
        status = "runtime error" if source == "broken.events" else "error"
        assert nodes[uid].message == f"not built: source {source} is stale (freshness {status})"
    assert warehouse(tmp_path / "candidate.duckdb") == warehouse(tmp_path / "reference.duckdb")
