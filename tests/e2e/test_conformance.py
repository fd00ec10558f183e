"""Conformance: a dbt-celery run ends every node where a plain ``dbt build`` does.

Each case builds a fixture project under tests/projects/conformance twice, into two
separate DuckDB files: once with plain ``dbt build`` (the reference, a dbt CLI process)
and once through dbt-celery on the session's Redis workers (the candidate), then
compares them node by node with :func:`dbt_celery.conformance.compare`. The recovery
cases break a node while the run starts, repair the cause while the run is under way,
and compare the warehouse a retried dbt-celery run leaves behind with the one a clean
plain build of the repaired project leaves behind.

Every run is bounded: ``compare`` and ``DbtRun.wait`` raise ``TimeoutError`` past
``RUN_TIMEOUT`` and pytest-timeout stops a test that hangs anywhere else.
"""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from dbt_celery.celery.backends import store_for
from dbt_celery.conformance import ConformanceReport, compare
from dbt_celery.core.artifacts import read_artifacts
from dbt_celery.core.records import NodeState, epoch_seconds
from dbt_celery.core.spec import RunSpec
from dbt_celery.core.store import StatusStore
from dbt_celery.dbt.commands import WORKSPACE_ENV
from dbt_celery.dbt.invocation import dbt_executable
from dbt_celery.run import RunStatus, submit
from tests.helpers import copy_project, wait_for

#: Seconds one dbt-celery run may take before the test fails (TimeoutError); each test's
#: pytest-timeout allows its runs plus a minute for everything else.
RUN_TIMEOUT = 150

FEATURES = "conformance/features"
RECOVERY = "conformance/recovery"

# What plain `dbt build` says of the features project on a fresh warehouse (and on the
# incremental and full-refresh runs after it): every node not listed passes.
FEATURES_NODES = 70
FEATURES_NOT_PASSING = {
    ("model", "broken"): "error",  # a model that errors
    ("model", "broken_child"): "skipped",
    ("test", "not_null_broken_id"): "skipped",
    ("test", "order_totals_status_is_known"): "fail",  # a test that fails...
    ("model", "order_totals_report"): "skipped",  # ...so its model's children are skipped
    ("model", "order_totals_final"): "skipped",
    ("test", "not_null_stg_customers_country"): "warn",  # severity: warn
    ("test", "not_null_stg_orders_amount"): "warn",  # warn_if / error_if
    ("unit_test", "order_size_expects_the_wrong_size"): "fail",  # a failing unit test...
    ("model", "order_size"): "skipped",  # ...skips its model and the model's children
    ("model", "order_size_summary"): "skipped",
    ("exposure", "broken_report"): "skipped",  # an exposure on a skipped model (revenue_dashboard: no-op)
}
# Nodes the fixture is there to cover, which must be in every whole-project build.
FEATURES_COVERS = {
    ("exposure", "revenue_dashboard"),  # dbt build reports exposures as no-op
    ("exposure", "broken_report"),  # ...also one whose upstream failed
    ("seed", "raw_customers"),
    ("seed", "raw_orders"),
    ("snapshot", "customers_snapshot"),
    ("model", "dim_customers.v1"),
    ("model", "dim_customers.v2"),
    ("model", "customers_on_v2"),
    ("model", "customers_on_latest"),
    ("model", "customer_tag_list"),  # child of the ephemeral customer_tags
    ("model", "customer_tag_count"),
    ("model", "orders_incremental"),
    ("model", "orders_enriched"),  # child of both parents of the relationships test
    ("model", "chain_10"),
    ("model", "fan_in"),
    ("unit_test", "customer_status_flags_domestic"),
    ("test", "relationships_stg_orders_customer_id__id__ref_stg_customers_"),
    ("test", "orders_have_positive_amounts"),
}
# Nodes dbt build never runs: the ephemeral model and the disabled one.
FEATURES_ABSENT = {("model", "customer_tags"), ("model", "legacy_orders")}


# -- helpers ------------------------------------------------------------------------------
def duckdb_spec(project: Path, db: Path, **options: Any) -> RunSpec:
    return RunSpec(project_dir=str(project), profile={"type": "duckdb", "path": str(db)}, **options)


def specs(project: Path, workdir: Path, mode: str, **options: Any) -> tuple[RunSpec, RunSpec]:
    """The reference and candidate specs of one case: same flags, two DuckDB files."""
    reference = duckdb_spec(project, workdir / "reference.duckdb", **options)
    candidate = duckdb_spec(project, workdir / "candidate.duckdb", invocation=mode, retries=0, **options)
    return reference, candidate


def short(unique_id: str) -> tuple[str, str]:
    """(resource type, name) of a node: tests without their hash, versions as name.vN."""
    parts = unique_id.split(".")
    kind = parts[0]
    if kind == "test":
        return kind, parts[2]
    if kind == "unit_test":
        return kind, parts[3]
    return kind, ".".join(parts[2:])


def by_name(statuses: dict[str, str]) -> dict[tuple[str, str], str]:
    return {short(uid): status for uid, status in statuses.items()}


def describe(report: ConformanceReport) -> str:
    lines = [f"run {report.run_id}: {len(report.differences)} difference(s)"]
    if report.candidate_error:
        lines.append(f"candidate error: {report.candidate_error}")
    lines += [
        f"  {d.unique_id}: plain dbt {d.reference!r}, dbt-celery {d.candidate!r} ({d.detail})"
        for d in report.differences
    ]
    return "\n".join(lines)


def check(report: ConformanceReport, step: str) -> None:
    assert report.ok, f"{step}: dbt-celery disagrees with plain dbt build\n{describe(report)}"


def check_features_reference(report: ConformanceReport, not_passing: dict[tuple[str, str], str], nodes: int) -> None:
    """The reference build itself ended as the fixture says (guards the fixture, not dbt-celery)."""
    reference = by_name(report.reference)
    assert len(reference) == nodes, sorted(reference)
    assert {
        key: status for key, status in reference.items() if status not in ("success", "pass", "no-op")
    } == not_passing
    assert not FEATURES_ABSENT & set(reference)


def warehouse(db: Path) -> dict[str, tuple[str, int]]:
    """Every table and view of a DuckDB file with its type and row count."""
    with duckdb.connect(str(db), read_only=True) as connection:
        relations = connection.execute(
            "select table_schema, table_name, table_type from information_schema.tables "
            "where table_catalog = current_database() order by 1, 2"
        ).fetchall()
        return {
            f"{schema}.{name}": (kind, connection.execute(f'select count(*) from "{schema}"."{name}"').fetchone()[0])
            for schema, name, kind in relations
        }


def plain_dbt_build(
    project: Path, db: Path, workdir: Path, vars: dict[str, Any], exclude: tuple[str, ...] = ()
) -> None:
    """A clean plain ``dbt build`` of ``project`` into ``db`` (a dbt CLI process)."""
    profiles = workdir / "profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    profile = {"plain": {"target": "dev", "outputs": {"dev": {"type": "duckdb", "path": str(db), "threads": 4}}}}
    (profiles / "profiles.yml").write_text(yaml.safe_dump(profile))
    command = [
        dbt_executable(), "build", "--project-dir", str(project), "--profiles-dir", str(profiles),
        "--profile", "plain", "--target-path", str(workdir / "target"), "--log-path", str(workdir / "logs"),
        "--vars", yaml.safe_dump(vars, default_flow_style=True).strip(),
    ]  # fmt: skip
    if exclude:
        command += ["--exclude", *exclude]
    result = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert result.returncode == 0, f"plain dbt build of the repaired project failed:\n{result.stdout[-3000:]}"


def next_batch(project: Path) -> None:
    """The seeds' next load: order 1 is gone, order 6 is new, dave moved to DE."""
    orders = project / "seeds" / "raw_orders.csv"
    lines = orders.read_text().splitlines()
    assert lines[1].startswith("1,")
    orders.write_text("\n".join([lines[0], *lines[2:], "6,2,70,shipped,2026-01-06 15:00:00", ""]))
    customers = project / "seeds" / "raw_customers.csv"
    customers.write_text(customers.read_text().replace("4,dave,NL", "4,dave,DE"))


def epoch(iso: str | None) -> float:
    seconds = epoch_seconds(iso)
    assert seconds is not None, "a fallback node has no started_at"
    return seconds


@pytest.fixture(scope="module", autouse=True)
def reference_workspaces(tmp_path_factory: pytest.TempPathFactory):
    """Keep the reference builds' dbt workspaces out of the project copies."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(WORKSPACE_ENV, str(tmp_path_factory.mktemp("reference-workspaces")))
        yield


@pytest.fixture
def features(tmp_path: Path) -> Path:
    return copy_project(FEATURES, tmp_path)


# -- conformance --------------------------------------------------------------------------
@pytest.mark.timeout(2 * RUN_TIMEOUT + 60)
@pytest.mark.parametrize(
    "mode, full_refresh",
    [("in_process", False), ("subprocess", True)],
    ids=["in_process-incremental", "subprocess-full_refresh"],
)
def test_whole_project_then_a_second_run(redis_workers, redis_app, features, tmp_path, mode, full_refresh):
    """The whole project on fresh warehouses, then on new data: incremental, or --full-refresh."""
    reference, candidate = specs(features, tmp_path, mode)
    report = compare(reference, candidate, app=redis_app, timeout=RUN_TIMEOUT)
    check_features_reference(report, FEATURES_NOT_PASSING, FEATURES_NODES)
    assert FEATURES_COVERS <= set(by_name(report.reference))
    check(report, "fresh build")
    assert warehouse(tmp_path / "candidate.duckdb") == warehouse(tmp_path / "reference.duckdb")

    # New data, then the same again on the built warehouses. Incremental, the model keeps
    # the order the seed lost and merges the new one; with --full-refresh it is rebuilt.
    # Either way the snapshot records dave's move.
    next_batch(features)
    reference, candidate = specs(features, tmp_path, mode, full_refresh=full_refresh)
    report = compare(reference, candidate, app=redis_app, timeout=RUN_TIMEOUT)
    check_features_reference(report, FEATURES_NOT_PASSING, FEATURES_NODES)
    check(report, "--full-refresh run" if full_refresh else "incremental second run")
    built = warehouse(tmp_path / "reference.duckdb")
    assert (built["main.orders_incremental"][1], built["main.customers_snapshot"][1]) == (5 if full_refresh else 6, 5)
    assert warehouse(tmp_path / "candidate.duckdb") == built


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_selection_that_excludes_tests(redis_workers, redis_app, features, tmp_path):
    """Without the unit tests and the failing data test, their models and children build."""
    exclude = ("test_type:unit", "order_totals_status_is_known")
    reference, candidate = specs(features, tmp_path, "subprocess", exclude=exclude)
    report = compare(reference, candidate, app=redis_app, timeout=RUN_TIMEOUT)
    not_passing = {
        key: status
        for key, status in FEATURES_NOT_PASSING.items()
        if key[0] != "unit_test" and key[1] not in ("order_totals_status_is_known", "order_totals_report",
                                                     "order_totals_final", "order_size", "order_size_summary")
    }  # fmt: skip
    check_features_reference(report, not_passing, FEATURES_NODES - 3)
    check(report, f"--exclude {' '.join(exclude)}")


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_selection_that_matches_nothing(redis_workers, redis_app, features, tmp_path):
    reference, candidate = specs(features, tmp_path, "in_process", select=("no_such_model",))
    report = compare(reference, candidate, app=redis_app, timeout=RUN_TIMEOUT)
    assert report.reference == {}
    check(report, "--select no_such_model")
    assert report.candidate == {}


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_unit_tests_selected_without_their_models(redis_workers, redis_app, features, tmp_path):
    reference, candidate = specs(features, tmp_path, "in_process", select=("test_type:unit",))
    report = compare(reference, candidate, app=redis_app, timeout=RUN_TIMEOUT)
    assert report.reference == {}  # dbt build runs a unit test only right before its model
    check(report, "--select test_type:unit")


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_ephemeral_model_that_fails_to_compile(redis_workers, redis_app, features, tmp_path):
    options = {"select": ("+customer_tag_count",), "vars": {"break_ephemeral": True}}
    reference, candidate = specs(features, tmp_path, "subprocess", **options)
    report = compare(reference, candidate, app=redis_app, timeout=RUN_TIMEOUT)
    skipped = {key: status for key, status in by_name(report.reference).items() if status == "skipped"}
    assert skipped == {
        ("model", "customer_tag_list"): "skipped",  # ERROR SKIP: its ephemeral parent failed
        ("test", "not_null_customer_tag_list_id"): "skipped",
        ("model", "customer_tag_count"): "skipped",
    }
    check(report, "--select +customer_tag_count with a broken ephemeral model")


# -- recovery -----------------------------------------------------------------------------
def wait_for_failure(store: StatusStore, run_id: str, unique_id: str) -> None:
    """Return once the producer recorded ``unique_id`` as failed."""
    event = wait_for(
        lambda: store.node_event(run_id, unique_id), RUN_TIMEOUT, f"the producer's record of {unique_id}", interval=0.05
    )
    assert event.outcome is NodeState.FAILED, event


def repaired_run(
    redis_app, project: Path, tmp_path: Path, var: str, broken_node: str, exclude: tuple[str, ...] = ()
) -> tuple[RunStatus, StatusStore]:
    """Run the recovery project through dbt-celery while ``broken_node`` fails, repairing it mid-run.

    The warehouse it leaves must be the one a clean plain build of the repaired project leaves.
    """
    flag = tmp_path / "flag"
    flag.touch()
    spec = duckdb_spec(
        project, tmp_path / "candidate.duckdb", vars={var: str(flag)}, exclude=exclude, retries=1, retry_delay=3.0
    )
    run = submit(spec, app=redis_app)
    store = store_for(redis_app)
    wait_for_failure(store, run.id, broken_node)
    flag.unlink()  # the cause goes away; the retry may now repair the node
    status = run.wait(RUN_TIMEOUT)
    unfinished = {uid: node for uid, node in status.to_dict()["nodes"].items() if node["status"] != "success"}
    assert status.state == "success", f"run {run.id} did not recover: {unfinished}"

    plain_dbt_build(project, tmp_path / "reference.duckdb", tmp_path / "plain", {var: str(flag)}, exclude)
    assert warehouse(tmp_path / "candidate.duckdb") == warehouse(tmp_path / "reference.duckdb")
    return status, store


def check_fallbacks(status: RunStatus, store: StatusStore, expected: set[str]) -> None:
    """Exactly ``expected`` were rebuilt by their consumers, all after the producer finished."""
    fallbacks = {uid: node for uid, node in status.nodes.items() if node.resolved_by == "fallback"}
    assert set(fallbacks) == expected
    producer = store.producer(status.run_id)
    assert producer is not None and producer.finished_at is not None, producer
    for uid, node in fallbacks.items():
        started = epoch(node.started_at)
        assert started >= producer.finished_at, (
            f"{uid} was rebuilt at {node.started_at}, before the producer finished "
            f"({datetime.fromtimestamp(producer.finished_at, timezone.utc).isoformat()})"
        )


@pytest.mark.timeout(2 * RUN_TIMEOUT + 60)
def test_transient_model_error_is_repaired_like_a_clean_build(redis_workers, redis_app, tmp_path):
    project = copy_project(RECOVERY, tmp_path)
    status, store = repaired_run(
        redis_app, project, tmp_path, "flag_file", "model.recovery.flaky", exclude=("flaky_tested",)
    )
    assert status.nodes["model.recovery.flaky"].status == "success"
    outcomes = store.outcomes(status.run_id, status.nodes)
    assert outcomes["model.recovery.flaky"].retries == 1
    assert all(outcome.retries <= 1 for outcome in outcomes.values()), outcomes
    below = {uid for uid in status.nodes if "flaky" in uid}
    assert len(below) == 5  # flaky, its child and grandchild, the child's two tests
    check_fallbacks(status, store, below)

    # The run's combined run_results.json carries each repair, not the producer's failure:
    # dbt retry would find nothing to do.
    artifacts = read_artifacts(store, status.run_id)
    assert artifacts.retryable() == []
    producer = store.producer(status.run_id)
    for uid in below:
        result = artifacts.results()[uid]
        assert result["status"] in ("success", "pass"), result
        assert epoch(result["timing"][0]["started_at"]) >= producer.finished_at, result


@pytest.mark.timeout(2 * RUN_TIMEOUT + 60)
def test_unit_test_below_a_transient_model_error_is_repaired(redis_workers, redis_app, tmp_path):
    project = copy_project(RECOVERY, tmp_path)
    exclude = ("guarded+", "side+", "flaky_child+")  # keep +flaky_tested only
    status, store = repaired_run(redis_app, project, tmp_path, "flag_file", "model.recovery.flaky", exclude=exclude)
    check_fallbacks(
        status,
        store,
        {
            "model.recovery.flaky",
            "unit_test.recovery.flaky_tested.flaky_tested_doubles_ids",
            "model.recovery.flaky_tested",
        },
    )


@pytest.mark.timeout(2 * RUN_TIMEOUT + 60)
def test_upstream_test_failure_is_repaired_like_a_clean_build(redis_workers, redis_app, tmp_path):
    project = copy_project(RECOVERY, tmp_path)
    status, store = repaired_run(redis_app, project, tmp_path, "test_flag_file", "test.recovery.guarded_is_ready")
    # dbt skipped everything below guarded; the test's retry passed and let it all build.
    repaired = {
        "test.recovery.guarded_is_ready",
        "model.recovery.guarded_child",
        "model.recovery.guarded_grandchild",
    }
    repaired |= {uid for uid in status.nodes if uid.startswith("test.recovery.unique_guarded_child_id")}
    assert len(repaired) == 4
    assert status.nodes["model.recovery.guarded"].resolved_by == "producer"
    check_fallbacks(status, store, repaired)


# -- newer dbt features: microbatch, contracts, Python models, check snapshots, --empty -----
EXTRAS = "conformance/dbt_extras"
EXTRAS_NODES = 20
# What plain `dbt build` says of the dbt_extras project on a fresh warehouse, with the
# 2025 batch of events_fragile failing: every node not listed passes.
EXTRAS_FRESH_NOT_PASSING = {
    ("model", "events_fragile"): "partial success",  # 2 of its 3 yearly batches built...
    ("test", "not_null_events_fragile_id"): "skipped",  # ...which dbt treats as an error below it
    ("model", "events_fragile_report"): "skipped",
    ("model", "contract_wrong_type"): "error",  # enforced contract, wrong data type
    ("model", "contract_wrong_type_child"): "skipped",
    ("model", "constraint_not_null"): "error",  # not_null constraint violated
    ("model", "constraint_not_null_child"): "skipped",
    ("model", "py_raises"): "error",  # a Python model that raises
    ("model", "py_raises_child"): "skipped",
}
# The second run, on new data with the 2026 batch failing: the snapshot whose check_cols
# names a missing column fails now that its table exists.
EXTRAS_SECOND_NOT_PASSING = {
    **EXTRAS_FRESH_NOT_PASSING,
    ("snapshot", "customers_missing_check_col"): "error",
}
# Then --empty: no rows, so the not_null constraint holds.
EXTRAS_EMPTY_NOT_PASSING = {
    key: status for key, status in EXTRAS_SECOND_NOT_PASSING.items() if key[1] not in
    ("constraint_not_null", "constraint_not_null_child")
}  # fmt: skip


def extras_next_batch(project: Path) -> None:
    """New data for the second run: carol's tier changes, bob moves, a November 2026 event."""
    customers = project / "seeds" / "raw_customers.csv"
    text = customers.read_text()
    assert "3,carol,bronze,Lyon" in text and "2,bob,silver,Ghent" in text
    customers.write_text(text.replace("3,carol,bronze,Lyon", "3,carol,silver,Lyon").replace("Ghent", "Antwerp"))
    events = project / "seeds" / "raw_events.csv"
    events.write_text(events.read_text() + "5,2026-11-20 12:00:00,50\n")


def compare_extras(redis_app, project: Path, workdir: Path, mode: str, step: str, fail_year: int, **options: Any):
    """One conformance step on the dbt_extras project; returns the warehouse both sides built."""
    reference, candidate = specs(project, workdir, mode, vars={"fail_year": fail_year}, **options)
    report = compare(reference, candidate, app=redis_app, timeout=RUN_TIMEOUT)
    reference_nodes = by_name(report.reference)
    assert len(reference_nodes) == EXTRAS_NODES, sorted(reference_nodes)
    not_passing = {key: status for key, status in reference_nodes.items() if status not in ("success", "pass")}
    check(report, step)
    built = warehouse(workdir / "reference.duckdb")
    assert warehouse(workdir / "candidate.duckdb") == built, step
    return not_passing, built


@pytest.mark.timeout(3 * RUN_TIMEOUT + 60)
@pytest.mark.parametrize("mode", ["in_process", "subprocess"])
def test_newer_dbt_features_fresh_then_second_run_then_empty(redis_workers, redis_app, tmp_path, mode):
    """Microbatch partial success, failing contracts, Python models, check snapshots and --empty.

    Three runs on one copy of the project: a fresh build, a second one on new data (the
    microbatch models run incrementally, the snapshots compare), then ``--empty``.
    """
    project = copy_project(EXTRAS, tmp_path)
    not_passing, built = compare_extras(redis_app, project, tmp_path, mode, "fresh build", 2025)
    assert not_passing == EXTRAS_FRESH_NOT_PASSING
    assert built["main.events_fragile"][1] == 3  # the 2024 and 2026 batches: 2 + 1 events

    extras_next_batch(project)
    not_passing, built = compare_extras(redis_app, project, tmp_path, mode, "second run", 2026)
    assert not_passing == EXTRAS_SECOND_NOT_PASSING
    assert built["main.customers_tier_history"][1] == 4  # carol's new tier is a version; bob's move is not
    assert built["main.events_fragile"][1] == 4  # now the 2025 batch built; the new 2026 event did not

    not_passing, built = compare_extras(redis_app, project, tmp_path, mode, "--empty run", 2026, empty=True)
    assert not_passing == EXTRAS_EMPTY_NOT_PASSING
    assert built["main.customers_contracted"][1] == 0  # refs read as zero rows...
    assert built["main.raw_customers"][1] == 3  # ...while seeds still load
