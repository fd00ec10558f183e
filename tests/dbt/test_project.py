"""ProjectGraph.load must select exactly what the dbt CLI selects, with the edges dbt builds on.

Every selection is loaded in process on one copy of the example project: the first load
parses it, the others reuse its partial-parse state. The dbt CLI's own ``dbt ls`` runs
once per selection, all at once, as the reference.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from dbt_celery.core.spec import RunSpec
from dbt_celery.dbt.commands import Workspace
from dbt_celery.dbt.invocation import dbt_executable
from dbt_celery.dbt.project import ProjectGraph
from dbt_celery.errors import SelectionError
from tests.dbt.dbt_fixtures import JAFFLE_SHOP, copy_fixture_project, isolated_workspaces  # noqa: F401 - autouse

#: Each selection twice: as RunSpec fields, and as the flags a user would give dbt.
SELECTIONS = {
    "tag:staging": ({"select": ("tag:staging",)}, ["--select", "tag:staging"]),
    "+orders": ({"select": ("+orders",)}, ["--select", "+orders"]),
    "stg_orders+": ({"select": ("stg_orders+",)}, ["--select", "stg_orders+"]),
    "all but marts": ({"exclude": ("tag:marts",)}, ["--exclude", "tag:marts"]),
    "selector marts_only": ({"selector": "marts_only"}, ["--selector", "marts_only"]),
}
#: The resource types dbt build executes.
BUILT_BY_DBT_BUILD = {"model", "seed", "snapshot", "test", "unit_test", "function"}

ORDERS = "model.jaffle_shop.orders"
CUSTOMERS = "model.jaffle_shop.customers"
STG_ORDERS = "model.jaffle_shop.stg_orders"
STG_PAYMENTS = "model.jaffle_shop.stg_payments"
STG_CUSTOMERS = "model.jaffle_shop.stg_customers"
EPHEMERAL = "model.jaffle_shop.int_order_payments"
SNAPSHOT = "snapshot.jaffle_shop.orders_snapshot"


@pytest.fixture(scope="module")
def jaffle(tmp_path_factory: pytest.TempPathFactory):
    """A private copy of the example project, with its DuckDB file in the temp folder too."""
    root = tmp_path_factory.mktemp("jaffle")
    project = copy_fixture_project(JAFFLE_SHOP, root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DBT_DUCKDB_PATH", str(root / "jaffle.duckdb"))
        yield project


def spec_for(project: Path, **selection) -> RunSpec:
    return RunSpec(project_dir=str(project), profiles_dir=str(project), **selection)


def load(project: Path, label: str, **selection) -> ProjectGraph:
    spec = spec_for(project, **selection)
    return ProjectGraph.load(spec, Workspace.create(spec, "project-tests", label))


@pytest.fixture(scope="module")
def graphs(jaffle: Path) -> dict[str, ProjectGraph]:
    return {name: load(jaffle, f"sel-{i}", **fields) for i, (name, (fields, _)) in enumerate(SELECTIONS.items())}


@pytest.fixture(scope="module")
def dbt_ls(jaffle: Path, graphs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """``dbt ls`` of every selection from the dbt CLI, as JSON documents, run side by side."""
    warm = jaffle / "target" / "partial_parse.msgpack"  # left there by ProjectGraph.load
    processes = {}
    for name, (_, flags) in SELECTIONS.items():
        target = tmp_path_factory.mktemp("ls")
        if warm.is_file():
            shutil.copyfile(warm, target / warm.name)
        command = [
            dbt_executable(), "ls", "--project-dir", str(jaffle), "--profiles-dir", str(jaffle),
            "--target-path", str(target), "--log-path", str(target / "logs"), *flags,
            "--output", "json", "--output-keys", "unique_id", "resource_type", "config.materialized", "--quiet",
        ]  # fmt: skip
        processes[name] = subprocess.Popen(
            command, cwd=jaffle, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    listed = {}
    for name, process in processes.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, f"dbt ls {name} failed:\n{out}\n{err}"
        listed[name] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return listed


def built_by_dbt(documents: list[dict]) -> dict[str, str]:
    """unique_id -> resource_type of the listed nodes dbt build would actually build."""
    return {
        doc["unique_id"]: doc["resource_type"]
        for doc in documents
        if doc["resource_type"] in BUILT_BY_DBT_BUILD and doc.get("config.materialized") != "ephemeral"
    }


def named(graph: ProjectGraph, prefix: str) -> str:
    """The unique id of the one node whose name starts with ``prefix``."""
    matches = [uid for uid, node in graph.nodes.items() if node.name.startswith(prefix)]
    assert len(matches) == 1, matches
    return matches[0]


@pytest.mark.parametrize("selection", SELECTIONS)
def test_node_set_is_what_dbt_ls_lists(selection: str, graphs, dbt_ls) -> None:
    graph = graphs[selection]
    expected = built_by_dbt(dbt_ls[selection])
    assert expected, "the reference selection should not be empty"
    assert sorted(graph.nodes) == sorted(expected)
    assert {uid: node.resource_type for uid, node in graph.nodes.items()} == expected


def test_ephemeral_models_are_listed_by_dbt_but_not_planned(graphs, dbt_ls) -> None:
    listed = {doc["unique_id"]: doc.get("config.materialized") for doc in dbt_ls["+orders"]}
    assert listed[EPHEMERAL] == "ephemeral"
    assert all(EPHEMERAL not in graph.nodes for graph in graphs.values())


def test_selections_hold_the_expected_nodes(graphs) -> None:
    # Spot checks a user would make by reading the project.
    staging = graphs["tag:staging"]
    assert {uid for uid in staging.nodes if uid.startswith("model.")} == {STG_ORDERS, STG_PAYMENTS, STG_CUSTOMERS}
    assert {uid for uid in graphs["selector marts_only"].nodes if not uid.startswith("test.")} == {ORDERS, CUSTOMERS}
    assert ORDERS not in graphs["all but marts"].nodes and SNAPSHOT in graphs["all but marts"].nodes
    assert CUSTOMERS not in graphs["+orders"].nodes
    assert "seed.jaffle_shop.raw_orders" not in graphs["stg_orders+"].nodes


@pytest.mark.parametrize("selection", SELECTIONS)
def test_edges_stay_inside_the_selection_and_agree(selection: str, graphs) -> None:
    graph = graphs[selection]
    for uid, node in graph.nodes.items():
        assert set(node.parents) <= set(graph.nodes), f"{uid} has a parent outside the selection"
        assert set(node.children) <= set(graph.nodes), f"{uid} has a child outside the selection"
        assert set(node.tests) <= set(node.children), f"{uid}'s tests must run after it"
        for child in node.children:
            assert uid in graph.nodes[child].parents
    assert graph.roots(), "a selection always has a first node"


def test_a_model_sees_its_neighbours_inside_the_selection(graphs) -> None:
    upstream = graphs["+orders"]
    orders = upstream.nodes[ORDERS]
    # stg_payments reaches orders through the ephemeral model, which is not a node of its own.
    models_before_orders = {uid for uid in orders.parents if uid.startswith("model.")}
    assert models_before_orders == {STG_ORDERS, STG_PAYMENTS}
    # dbt build runs orders only after the tests of the models it reads.
    assert all(uid in orders.parents for uid in upstream.nodes[STG_ORDERS].tests)
    # customers reads orders, but it is not selected, so it is not a child here.
    assert {uid for uid in orders.children if uid.startswith("model.")} == set()
    assert upstream.nodes["seed.jaffle_shop.raw_orders"].parents == ()

    downstream = graphs["stg_orders+"]
    stg_orders = downstream.nodes[STG_ORDERS]
    assert stg_orders.parents == ()  # raw_orders is not selected: stg_orders is a root
    assert STG_ORDERS in downstream.roots()
    assert {uid for uid in stg_orders.children if not uid.startswith("test.")} == {ORDERS, SNAPSHOT}
    # stg_customers is not selected, so of customers' two model parents only orders is left.
    assert {uid for uid in downstream.nodes[CUSTOMERS].parents if uid.startswith("model.")} == {ORDERS}


def test_a_test_on_two_models_belongs_to_both(graphs) -> None:
    marts = graphs["selector marts_only"]
    relationships = named(marts, "relationships_orders_customer_id")
    assert relationships in marts.nodes[ORDERS].tests
    assert relationships in marts.nodes[CUSTOMERS].tests
    assert {ORDERS, CUSTOMERS} <= set(marts.nodes[relationships].parents)
    assert marts.nodes[relationships].resource_type == "test"
    # A test on one model belongs to that model only.
    unique_orders = named(marts, "unique_orders_order_id")
    assert unique_orders in marts.nodes[ORDERS].tests and unique_orders not in marts.nodes[CUSTOMERS].tests


def test_node_selectors_name_exactly_one_node(graphs) -> None:
    graph = graphs["+orders"]
    selectors = [node.selector for node in graph.nodes.values()]
    assert len(set(selectors)) == len(selectors)
    assert graph.nodes[ORDERS].selector == "fqn:jaffle_shop.marts.orders"


def test_graph_round_trips_through_its_plan_form(graphs) -> None:
    from dbt_celery.dbt.project import GraphNode

    for node in graphs["+orders"].nodes.values():
        assert GraphNode.from_dict(json.loads(json.dumps(node.to_dict()))) == node


def test_a_selection_matching_nothing_is_a_selection_error(jaffle: Path, graphs) -> None:
    with pytest.raises(SelectionError) as caught:
        load(jaffle, "nothing", select=("tag:no_such_tag",))
    message = str(caught.value)
    assert "--select tag:no_such_tag" in message
    assert "matches no node that dbt build would run" in message


def test_a_selection_of_only_an_ephemeral_model_is_a_selection_error(jaffle: Path, graphs) -> None:
    # dbt ls lists it, but dbt build builds nothing for it.
    with pytest.raises(SelectionError, match=r"--select int_order_payments matches no node"):
        load(jaffle, "ephemeral-only", select=("int_order_payments",))
