"""DbtInvocation against real dbt: the node stream must tell what run_results.json tells.

The edge-case project has one node of every kind that matters: a seed, models, a model
that errors and its child, a failing test whose model has a child, a warn-only test,
an ephemeral model and its child, and a snapshot. Each build is run once per module
and shared by the tests that read it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator

import duckdb
import pytest

from dbt_celery.core.records import NodeState
from dbt_celery.core.spec import RunSpec
from dbt_celery.dbt.invocation import events_for_unreported, release_connections
from tests.dbt.dbt_fixtures import (  # noqa: F401 - isolated_workspaces is an autouse fixture
    Build,
    copy_fixture_project,
    drop_schemas,
    isolated_workspaces,
    relations_in,
    run_build,
    start_build,
    unique_schema,
)

#: What a user expects of each buildable node of the edge-case project, by node name.
EXPECTED_OUTCOMES = {
    "people": NodeState.SUCCESS,  # seed
    "base": NodeState.SUCCESS,
    "unique_base_id": NodeState.SUCCESS,
    "not_null_base_nickname": NodeState.SUCCESS,  # severity: warn
    "checked": NodeState.SUCCESS,
    "accepted_values_checked_name__alice__bob": NodeState.FAILED,
    "checked_child": NodeState.UPSTREAM_FAILED,  # its parent's test failed
    "boom": NodeState.FAILED,
    "boom_child": NodeState.UPSTREAM_FAILED,
    "inlined_child": NodeState.SUCCESS,  # child of an ephemeral model
    "people_snapshot": NodeState.SUCCESS,
}
#: The ephemeral model: inlined into its child, never built.
EPHEMERAL = "model.edge_cases.inlined"
#: Relations a build leaves in the warehouse (not boom, its child, checked_child or the ephemeral model).
EXPECTED_RELATIONS = {"people", "base", "checked", "inlined_child", "people_snapshot"}


@pytest.fixture(scope="module")
def edge_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_fixture_project("edge_cases", tmp_path_factory.mktemp("edge"))


@pytest.fixture(scope="module", params=["in_process", "subprocess"])
def duckdb_build(request: pytest.FixtureRequest, edge_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Build:
    """One ``dbt build`` of the edge-case project on DuckDB, in each invocation mode."""
    mode = request.param
    database = tmp_path_factory.mktemp(f"duckdb-{mode}") / "edge.duckdb"
    spec = RunSpec(project_dir=str(edge_project), profiles_dir=str(edge_project), invocation=mode)
    build = run_build(spec, f"duckdb-{mode}", mode, {"DBT_DUCKDB_PATH": str(database)})
    with duckdb.connect(str(database), read_only=True) as connection:
        build.relations = {
            row[0] for row in connection.execute("select table_name from information_schema.tables").fetchall()
        }
    return build


@pytest.fixture(scope="module")
def postgres_builds(edge_project: Path) -> Iterator[tuple[list[Build], list[tuple[float, float]]]]:
    """Two subprocess-mode builds of the same project run at once, each in its own schema.

    dbt runs in two child processes; a thread per build only reads its log stream.
    Yields the builds and the (start, end) wall-clock span of each dbt process.
    """
    schemas = [unique_schema("dbt_celery_a"), unique_schema("dbt_celery_b")]
    spans: list[tuple[float, float]] = [(0.0, 0.0)] * len(schemas)
    builds: list[Build | None] = [None] * len(schemas)
    failures: list[BaseException] = []

    def consume(index: int, schema: str) -> None:
        try:
            spec = RunSpec(
                project_dir=str(edge_project),
                profiles_dir=str(edge_project),
                target="postgres",
                invocation="subprocess",
            )
            workspace, invocation = start_build(spec, f"postgres-{index}", "subprocess", {"DBT_SCHEMA": schema})
            started = time.monotonic()
            events = list(invocation)
            spans[index] = (started, time.monotonic())
            builds[index] = Build(spec, workspace, invocation, events)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=consume, args=(i, schema)) for i, schema in enumerate(schemas)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=180)
        if failures:
            raise failures[0]
        finished = [build for build in builds if build is not None]
        assert len(finished) == len(schemas), "a build did not finish"
        for build, schema in zip(finished, schemas):
            build.schema, build.relations = schema, relations_in(schema)
        yield finished, spans
    finally:
        drop_schemas(*schemas)


def node_name(unique_id: str) -> str:
    return unique_id.split(".")[2]


def assert_stream_matches_run_results(build: Build) -> None:
    """The checks a user makes of one build's stream against dbt's own artefact."""
    streamed, results = build.final, build.results
    assert len(build.events) == len(streamed), "a node was streamed more than once"

    # dbt 1.11 also fires NodeFinished for an ephemeral model it inlines (status
    # "success", nothing built, absent from run_results.json); the producer drops it
    # because the plan holds no ephemeral node. Every other streamed node is a built one.
    assert set(streamed) - set(results) == {EPHEMERAL}
    final = {uid: event for uid, event in streamed.items() if uid != EPHEMERAL}
    # Every node dbt reports in run_results.json was streamed, and nothing else.
    assert sorted(final) == sorted(results)
    # The streamed status is dbt's status, node for node.
    assert {uid: event.dbt_status for uid, event in final.items()} == {
        uid: result["status"] for uid, result in results.items()
    }
    assert {uid: event.resource_type for uid, event in final.items()} == {uid: uid.split(".")[0] for uid in results}
    # ... and each status means what a user expects.
    assert {node_name(uid): event.outcome for uid, event in final.items()} == EXPECTED_OUTCOMES

    boom = build.node("boom")
    assert (boom.dbt_status, boom.outcome) == ("error", NodeState.FAILED)
    assert "boom" in (boom.message or "")
    assert build.node("boom_child").outcome is NodeState.UPSTREAM_FAILED
    assert build.node("boom_child").dbt_status == "skipped"

    warned = build.node("not_null_base_nickname")
    assert (warned.dbt_status, warned.outcome, warned.failures) == ("warn", NodeState.SUCCESS, 1)

    failing = build.node("accepted_values_checked_name__alice__bob")
    assert (failing.dbt_status, failing.outcome, failing.failures) == ("fail", NodeState.FAILED, 1)
    assert failing.failures == results[failing.unique_id]["failures"]

    # The ephemeral model is inlined: dbt builds only its child.
    assert build.node("inlined_child").dbt_status == "success"
    snapshot = build.node("people_snapshot")
    assert (snapshot.resource_type, snapshot.outcome) == ("snapshot", NodeState.SUCCESS)
    assert all(event.finished_at for event in final.values() if event.dbt_status != "skipped")

    # dbt ran to the end, and its verdict is a failure because nodes failed.
    assert build.invocation.success is False
    assert build.invocation.error is None


def test_stream_matches_run_results_on_duckdb(duckdb_build: Build) -> None:
    assert_stream_matches_run_results(duckdb_build)
    assert duckdb_build.relations == EXPECTED_RELATIONS


def test_run_results_land_in_the_workspace_not_the_project(
    duckdb_build: Build, edge_project: Path, isolated_workspaces: Path
) -> None:
    assert duckdb_build.workspace.root.is_relative_to(isolated_workspaces)
    assert duckdb_build.workspace.run_results.is_file()
    assert not (edge_project / "target").exists()
    assert not (edge_project / "logs").exists()


def test_events_for_unreported_fills_in_from_run_results(duckdb_build: Build) -> None:
    final, results = duckdb_build.final, duckdb_build.results
    run_results = duckdb_build.workspace.run_results
    selected = set(results)

    # Everything was reported: nothing to add.
    assert events_for_unreported(selected, final, run_results, "producer ended") == []

    # Nodes dbt wrote only to run_results.json keep dbt's status from there. A node
    # skipped there was cut off by a failure elsewhere, so it counts as upstream_failed.
    failing_test = duckdb_build.node("accepted_values_checked_name__alice__bob").unique_id
    unreported = {duckdb_build.node("checked").unique_id, duckdb_build.node("boom_child").unique_id, failing_test}
    reported = set(final) - unreported
    ghost = "model.edge_cases.never_built"
    added = events_for_unreported(selected | {ghost}, reported, run_results, "producer ended")
    by_id = {event.unique_id: event for event in added}
    assert sorted(by_id) == sorted(unreported | {ghost})
    for uid in unreported:
        assert by_id[uid].dbt_status == results[uid]["status"]
    assert by_id[duckdb_build.node("checked").unique_id].outcome is NodeState.SUCCESS
    assert by_id[duckdb_build.node("boom_child").unique_id].outcome is NodeState.UPSTREAM_FAILED
    assert (by_id[failing_test].outcome, by_id[failing_test].failures) == (NodeState.FAILED, 1)
    assert by_id[failing_test].resource_type == "test"
    # A node found nowhere is not_run, with the reason given.
    ghost_event = by_id[ghost]
    assert (ghost_event.outcome, ghost_event.dbt_status, ghost_event.message) == (
        NodeState.NOT_RUN,
        None,
        "producer ended",
    )


def test_events_for_unreported_without_run_results_marks_everything_not_run(
    duckdb_build: Build, tmp_path: Path
) -> None:
    selected = set(duckdb_build.results)
    added = events_for_unreported(selected, [], tmp_path / "missing" / "run_results.json", "dbt crashed")
    assert sorted(event.unique_id for event in added) == sorted(selected)
    assert {(event.outcome, event.message) for event in added} == {(NodeState.NOT_RUN, "dbt crashed")}


def test_stream_matches_run_results_on_postgres(postgres_builds) -> None:
    builds, _ = postgres_builds
    for build in builds:
        assert_stream_matches_run_results(build)
        assert build.relations == EXPECTED_RELATIONS


def test_concurrent_subprocess_builds_do_not_collide(postgres_builds, edge_project: Path) -> None:
    builds, spans = postgres_builds
    # The two dbt processes really ran at the same time.
    assert max(start for start, _ in spans) < min(end for _, end in spans)
    # Each build wrote its own complete run_results.json into its own workspace.
    paths = {build.workspace.run_results for build in builds}
    assert len(paths) == 2
    invocation_ids = set()
    for build in builds:
        document = build.run_results
        invocation_ids.add(document["metadata"]["invocation_id"])
        assert {node_name(result["unique_id"]) for result in document["results"]} == set(EXPECTED_OUTCOMES)
        assert Path(document["args"]["target_path"]) == build.workspace.target_path
        # Each build's objects are in its own schema, and each schema is whole.
        assert build.relations == EXPECTED_RELATIONS
    assert len(invocation_ids) == 2
    assert not (edge_project / "target").exists()


def test_closing_an_in_process_stream_early_waits_for_dbt(edge_project: Path, tmp_path: Path) -> None:
    # The producer's `for event in invocation` loop ends early when storing an event
    # raises. dbt cannot run twice in one process, so the next in-process invocation
    # must not start before this one's dbt is done.
    spec = RunSpec(project_dir=str(edge_project), profiles_dir=str(edge_project))
    _, invocation = start_build(spec, "early-close", "in_process", {"DBT_DUCKDB_PATH": str(tmp_path / "early.duckdb")})
    stream = iter(invocation)
    try:
        assert next(stream).unique_id
        stream.close()  # what leaving a for loop by an exception does to the generator
        running = [thread for thread in threading.enumerate() if thread.name == "dbt-invocation" and thread.is_alive()]
        assert running == [], "dbt still runs after its stream was closed, outside the in-process lock"
    finally:
        for thread in threading.enumerate():
            if thread.name == "dbt-invocation":
                thread.join(timeout=120)
        release_connections()
