"""ProjectGraph must plan exactly what the run's ``dbt build`` runs, with the edges dbt builds on.

The example project is copied once, with additions that exercise dbt build's own rules: an
empty model (dbt build leaves it out, dbt ls lists it), a unit test, an exposure (dbt build
reports it as a no-op, so it is planned too) and a selector rendered from --vars that is also the
project's default. The copy is parsed once and every case is selected on that one manifest.

Two references, both dbt's own: for every case, ``dbt ls`` with the same flags, captured once
(in process, on the same manifest) and narrowed by the rules dbt build adds; for one broad
case, the run_results.json of a real ``dbt build`` CLI process, started when the module starts.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dbt_celery.core.spec import RunSpec
from dbt_celery.dbt import selection
from dbt_celery.dbt.commands import Workspace
from dbt_celery.dbt.invocation import DbtInvocation, dbt_executable
from dbt_celery.dbt.project import ProjectGraph, parse_project
from dbt_celery.errors import SelectionError
from tests.dbt.dbt_fixtures import JAFFLE_SHOP, copy_fixture_project, isolated_workspaces  # noqa: F401 - autouse

#: Each case as RunSpec fields; the flags a user would give dbt are derived from them.
SELECTIONS: dict[str, dict[str, Any]] = {
    "no flags: the default selector": {},
    "tag:staging": {"select": ("tag:staging",)},
    "+orders": {"select": ("+orders",)},
    "stg_orders+": {"select": ("stg_orders+",)},
    "1+customers": {"select": ("1+customers",)},
    "@stg_payments": {"select": ("@stg_payments",)},
    "intersection": {"select": ("+orders,tag:staging",)},
    "a model with its tests": {"select": ("stg_payments",)},
    "orders: a test on two models": {"select": ("orders",)},
    "all but marts": {"exclude": ("tag:marts",)},
    "selector marts_only": {"selector": "marts_only"},
    "seeds": {"select": ("resource_type:seed",)},
    "snapshot": {"select": ("orders_snapshot",)},
}
#: A case with --vars needs its own parse: vars change the manifest and the rendered selectors.
VARS_CASE = {"selector": "by_var", "vars": {"pick_tag": "staging"}}
#: The case a real ``dbt build`` runs: graph operators, a tag, an exclusion, and every special node.
BUILD_CASE = {"select": ("+orders+", "tag:marts"), "exclude": ("customers",)}
#: The resource types dbt build reports a result for (exposures and saved queries as no-ops).
BUILT_BY_DBT_BUILD = ("model", "seed", "snapshot", "test", "unit_test", "function", "exposure", "saved_query")

ORDERS = "model.jaffle_shop.orders"
CUSTOMERS = "model.jaffle_shop.customers"
STG_ORDERS = "model.jaffle_shop.stg_orders"
STG_PAYMENTS = "model.jaffle_shop.stg_payments"
STG_CUSTOMERS = "model.jaffle_shop.stg_customers"
EPHEMERAL = "model.jaffle_shop.int_order_payments"
EMPTY = "model.jaffle_shop.placeholder"
UNIT_TEST = "unit_test.jaffle_shop.stg_payments.payments_in_dollars"
EXPOSURE = "exposure.jaffle_shop.orders_dashboard"
SNAPSHOT = "snapshot.jaffle_shop.orders_snapshot"

SELECTORS_YML = """\
selectors:
  - name: marts_only
    definition:
      method: tag
      value: marts
  - name: by_var
    default: true
    definition:
      method: tag
      value: "{{ var('pick_tag', 'marts') }}"
"""
EXTRA_YML = """\
unit_tests:
  - name: payments_in_dollars
    model: stg_payments
    given:
      - input: ref('raw_payments')
        rows:
          - {id: 1, order_id: 1, payment_method: coupon, amount: 2500}
    expect:
      rows:
        - {payment_id: 1, amount: 25.00}

exposures:
  - name: orders_dashboard
    type: dashboard
    owner: {name: Sales}
    depends_on:
      - ref('orders')
"""


@pytest.fixture(scope="module")
def jaffle(tmp_path_factory: pytest.TempPathFactory):
    """A private copy of the example project with the additions above; its DuckDB file in the temp folder."""
    root = tmp_path_factory.mktemp("jaffle")
    project = copy_fixture_project(JAFFLE_SHOP, root)
    (project / "selectors.yml").write_text(SELECTORS_YML)
    (project / "models" / "marts" / "placeholder.sql").write_text("\n")  # a model still to be written
    (project / "models" / "staging" / "_extra.yml").write_text(EXTRA_YML)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DBT_DUCKDB_PATH", str(root / "jaffle.duckdb"))
        yield project


def spec_for(project: Path, **selection: Any) -> RunSpec:
    return RunSpec(project_dir=str(project), profiles_dir=str(project), **selection)


def dbt_flags(fields: dict[str, Any]) -> list[str]:
    """The flags a user would give dbt for these RunSpec fields."""
    flags: list[str] = []
    if fields.get("select"):
        flags += ["--select", *fields["select"]]
    if fields.get("exclude"):
        flags += ["--exclude", *fields["exclude"]]
    if fields.get("selector"):
        flags += ["--selector", fields["selector"]]
    if fields.get("vars"):
        flags += ["--vars", json.dumps(fields["vars"])]
    return flags


class RealBuild:
    """``dbt build`` of BUILD_CASE in its own dbt process, running beside the other tests."""

    def __init__(self, project: Path, root: Path) -> None:
        command = [
            dbt_executable(), "build", "--project-dir", str(project), "--profiles-dir", str(project),
            "--target-path", str(root / "target"), "--log-path", str(root / "logs"), *dbt_flags(BUILD_CASE),
        ]  # fmt: skip
        env = {**os.environ, "DBT_DUCKDB_PATH": str(root / "build.duckdb")}
        self.target, self.output = root / "target", root / "output.txt"
        with self.output.open("w") as output:  # a file, not a pipe: nobody reads it while dbt runs
            self.process = subprocess.Popen(command, cwd=project, env=env, stdout=output, stderr=subprocess.STDOUT)

    def results(self) -> dict[str, str]:
        """unique_id -> status of every entry of its run_results.json."""
        returncode = self.process.wait(timeout=240)
        assert returncode == 0, f"dbt build failed:\n{self.output.read_text()}"
        documents = json.loads((self.target / "run_results.json").read_text())["results"]
        return {result["unique_id"]: result["status"] for result in documents}


@pytest.fixture(scope="module", autouse=True)
def real_build(jaffle: Path, tmp_path_factory: pytest.TempPathFactory):
    """Started before the module's first test, read by the last one."""
    build = RealBuild(jaffle, tmp_path_factory.mktemp("real-build"))
    yield build
    if build.process.poll() is None:
        build.process.kill()
        build.process.wait()


@pytest.fixture(scope="module")
def parsed(jaffle: Path) -> tuple[RunSpec, Workspace, Any]:
    """The copy parsed once, as a run without vars parses it."""
    spec = spec_for(jaffle)
    workspace = Workspace.create(spec, "project-tests", "parse")
    return spec, workspace, parse_project(spec, workspace)


def select(parsed, label: str, **selection: Any) -> ProjectGraph:
    """The graph of one selection on the shared manifest."""
    spec, _, manifest = parsed
    case = spec_for(Path(spec.project_dir), **selection)
    return ProjectGraph.select(case, Workspace.create(case, "project-tests", label), manifest)


@pytest.fixture(scope="module")
def graphs(parsed) -> dict[str, ProjectGraph]:
    return {name: select(parsed, f"sel-{i}", **fields) for i, (name, fields) in enumerate(SELECTIONS.items())}


@pytest.fixture(scope="module")
def vars_graph(jaffle: Path) -> ProjectGraph:
    spec = spec_for(jaffle, **VARS_CASE)
    return ProjectGraph.load(spec, Workspace.create(spec, "project-tests", "vars"))


def dbt_ls(project: Path, fields: dict[str, Any], manifest: Any, label: str) -> list[dict[str, Any]]:
    """dbt's own ``dbt ls`` of these flags, on ``manifest``, one JSON document per listed node."""
    target = project.parent / f"ls-{label}"
    args = [
        "ls", "--project-dir", str(project), "--profiles-dir", str(project),
        "--target-path", str(target), "--log-path", str(target / "logs"), *dbt_flags(fields),
        "--resource-type", *BUILT_BY_DBT_BUILD, "--output", "json",
        "--output-keys", "unique_id", "resource_type", "config.materialized", "raw_code", "depends_on",
        "--log-level", "none",
    ]  # fmt: skip
    invocation = DbtInvocation(args, cwd=project, manifest=manifest)
    invocation.run()
    assert invocation.success, f"dbt ls {label} failed: {invocation.error}"
    return [json.loads(line) for line in invocation.result.result]


def built_by_dbt(documents: list[dict[str, Any]]) -> dict[str, str]:
    """unique_id -> resource_type of the listed nodes dbt build reports a result for.

    dbt build leaves out what dbt ls keeps: ephemeral models (inlined into their children),
    empty models (its selector drops nodes without code), and unit tests whose model it
    does not build (it runs a unit test only right before its model).
    """
    kept = {
        doc["unique_id"]: doc
        for doc in documents
        if doc.get("config.materialized") != "ephemeral"
        and (
            doc["resource_type"] in ("seed", "unit_test", "exposure", "saved_query") or doc.get("raw_code", "").strip()
        )
    }
    return {
        uid: doc["resource_type"]
        for uid, doc in kept.items()
        if doc["resource_type"] != "unit_test" or doc["depends_on"]["nodes"][0] in kept
    }


@pytest.fixture(scope="module")
def listed(jaffle: Path, parsed, vars_graph: ProjectGraph) -> dict[str, list[dict[str, Any]]]:
    """``dbt ls`` of every case, captured once."""
    _, _, manifest = parsed
    documents = {name: dbt_ls(jaffle, fields, manifest, f"{i}") for i, (name, fields) in enumerate(SELECTIONS.items())}
    documents["vars"] = dbt_ls(jaffle, VARS_CASE, vars_graph.manifest, "vars")
    return documents


def named(graph: ProjectGraph, prefix: str) -> str:
    """The unique id of the one node whose name starts with ``prefix``."""
    matches = [uid for uid, node in graph.nodes.items() if node.name.startswith(prefix)]
    assert len(matches) == 1, matches
    return matches[0]


@pytest.mark.parametrize("selection", SELECTIONS)
def test_node_set_is_what_dbt_ls_lists_narrowed_by_dbt_build(selection: str, graphs, listed) -> None:
    graph = graphs[selection]
    expected = built_by_dbt(listed[selection])
    assert expected, "the reference selection should not be empty"
    assert {uid: node.resource_type for uid, node in graph.nodes.items()} == expected


def test_vars_reach_the_rendered_selectors(vars_graph: ProjectGraph, listed, graphs) -> None:
    assert {uid: node.resource_type for uid, node in vars_graph.nodes.items()} == built_by_dbt(listed["vars"])
    # by_var picks the tag named by --vars: staging here, marts (its default) without vars.
    assert set(vars_graph.nodes) == set(graphs["tag:staging"].nodes)
    assert set(graphs["no flags: the default selector"].nodes) == set(graphs["selector marts_only"].nodes)


def test_dbt_build_rules_that_dbt_ls_does_not_apply(graphs, listed) -> None:
    # dbt ls lists the ephemeral and the empty model; dbt build builds neither.
    everything_but_marts = {doc["unique_id"] for doc in listed["all but marts"]}
    assert EPHEMERAL in everything_but_marts and EPHEMERAL not in graphs["all but marts"].nodes
    assert EMPTY in {doc["unique_id"] for doc in listed["selector marts_only"]}
    assert all(EPHEMERAL not in graph.nodes and EMPTY not in graph.nodes for graph in graphs.values())
    # A model's unit test comes with it, and runs before it.
    with_tests = graphs["a model with its tests"]
    assert UNIT_TEST in with_tests.nodes and with_tests.nodes[STG_PAYMENTS].parents == (UNIT_TEST,)


def test_selections_hold_the_expected_nodes(graphs) -> None:
    # Spot checks a user would make by reading the project.
    staging = graphs["tag:staging"]
    assert {uid for uid in staging.nodes if uid.startswith("model.")} == {STG_ORDERS, STG_PAYMENTS, STG_CUSTOMERS}
    assert {uid for uid in graphs["selector marts_only"].nodes if not uid.startswith("test.")} == {ORDERS, CUSTOMERS}
    assert ORDERS not in graphs["all but marts"].nodes and SNAPSHOT in graphs["all but marts"].nodes
    assert CUSTOMERS not in graphs["+orders"].nodes
    assert "seed.jaffle_shop.raw_orders" not in graphs["stg_orders+"].nodes
    assert {uid for uid in graphs["1+customers"].nodes if uid.startswith("model.")} == {
        ORDERS,
        CUSTOMERS,
        STG_CUSTOMERS,
    }
    assert {uid for uid in graphs["seeds"].nodes} == {
        f"seed.jaffle_shop.raw_{name}" for name in ("customers", "orders", "payments")
    }
    assert set(graphs["snapshot"].nodes) == {SNAPSHOT}
    # The relationships test on orders and customers comes with orders alone (eager indirect selection).
    assert named(graphs["orders: a test on two models"], "relationships_orders_customer_id")


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


def test_a_selection_matching_nothing_is_a_selection_error(parsed) -> None:
    with pytest.raises(SelectionError) as caught:
        select(parsed, "nothing", select=("tag:no_such_tag",))
    message = str(caught.value)
    assert "--select tag:no_such_tag" in message
    assert "matches no node that dbt build would run" in message


@pytest.mark.parametrize(
    "selection",
    [("int_order_payments",), ("placeholder",), ("test_type:unit",)],
    ids=["only an ephemeral model", "only an empty model", "only unit tests"],
)
def test_a_selection_dbt_build_runs_nothing_of_is_a_selection_error(parsed, selection: tuple[str, ...]) -> None:
    # dbt ls lists these; dbt build builds nothing for them (a unit test runs only beside its model).
    with pytest.raises(SelectionError, match=rf"--select {selection[0]} matches no node"):
        select(parsed, "runs-nothing", select=selection)


def test_an_unknown_yaml_selector_is_a_selection_error_naming_it(parsed) -> None:
    with pytest.raises(SelectionError) as caught:
        select(parsed, "unknown-selector", selector="no_such_selector")
    message = str(caught.value)
    assert message.startswith("dbt could not resolve the selection: Could not find selector named no_such_selector")
    assert "marts_only" in message  # dbt names the selectors that do exist


def test_planning_runs_dbt_once(jaffle: Path, vars_graph: ProjectGraph, monkeypatch: pytest.MonkeyPatch) -> None:
    from dbt.cli.main import dbtRunner

    commands: list[str] = []
    real_invoke = dbtRunner.invoke

    def recorded(runner: dbtRunner, args: list[str], **kwargs: Any) -> Any:
        commands.append(args[0])
        return real_invoke(runner, args, **kwargs)

    monkeypatch.setattr(dbtRunner, "invoke", recorded)  # a spy: every invocation still runs dbt
    # The vars of the last parse, so that partial parsing starts warm.
    spec = spec_for(jaffle, select=("+orders",), vars=VARS_CASE["vars"])
    graph = ProjectGraph.load(spec, Workspace.create(spec, "project-tests", "one-invocation"))
    assert ORDERS in graph.nodes
    assert commands == ["parse"]


def test_a_build_after_planning_schedules_on_the_same_graph_without_linking_test_edges_again(
    parsed, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dbt.compilation import Linker

    spec, _, manifest = parsed
    graph = select(parsed, "reuse-edges")  # what the producer selects on, then builds
    computed: list[str] = []

    def spy(name: str) -> Any:
        real = getattr(Linker, name)

        def recorded(linker: Linker, given: Any) -> None:
            computed.append(name)
            real(linker, given)  # dbt's own algorithm still runs whenever it is called

        return recorded

    for algorithm in ("add_test_edges_1", "add_test_edges_2"):
        monkeypatch.setattr(Linker, algorithm, spy(algorithm))

    def scheduled_graph(label: str) -> dict[str, list[str]]:
        """Each node's successors in the graph dbt build compiled (its graph_summary.json, test edges included)."""
        target = Path(spec.project_dir).parent / f"reuse-{label}"
        args = [
            "build", "--select", "raw_payments", "--project-dir", spec.project_dir, "--profiles-dir", spec.project_dir,
            "--target-path", str(target), "--log-path", str(target / "logs"),
        ]  # fmt: skip
        invocation = DbtInvocation(args, cwd=spec.project_dir, manifest=manifest)
        invocation.run()
        assert invocation.success, f"dbt build ({label}) failed: {invocation.error}"
        summary = json.loads((target / "graph_summary.json").read_text())["with_test_edges"]
        names = {index: node["name"] for index, node in summary.items()}
        return {node["name"]: sorted(names[str(i)] for i in node.get("succ", [])) for node in summary.values()}

    linked_by_dbt = scheduled_graph("linked")
    assert computed, "a build of its own links the test edges"
    computed.clear()
    with selection.test_edges_reused(manifest, graph.linked):
        reused = scheduled_graph("reused")
    assert computed == []
    assert reused == linked_by_dbt
    assert any(kind == "parent_test" for _, _, kind in graph.linked.graph.edges(data="edge_type"))
    scheduled_graph("after")  # outside the block dbt links them itself again
    assert computed


def test_the_plan_is_what_a_real_dbt_build_reports(parsed, real_build: RealBuild) -> None:
    # Last in the module: the build started with it, so by now it has had time to finish.
    graph = select(parsed, "build-case", **BUILD_CASE)
    reported = real_build.results()
    no_ops = {uid for uid, status in reported.items() if status == "no-op"}
    assert no_ops == {EXPOSURE}, "dbt build reports the exposure (a no-op)"
    assert set(graph.nodes) == set(reported)  # the exposure too: the run's status shows every node dbt reports
    assert graph.nodes[EXPOSURE].parents  # chained after the models it depends on
    # The case reaches the special nodes: a unit test, a seed, an ephemeral and an empty model, an exclusion.
    assert UNIT_TEST in graph.nodes and "seed.jaffle_shop.raw_payments" in graph.nodes
    assert EPHEMERAL not in reported and EMPTY not in reported and CUSTOMERS not in reported
