"""The project graph: which nodes a run builds, and in what order dbt builds them.

The node set is what the run's own ``dbt build`` selects, resolved on the parsed manifest
by the loaded dbt (:mod:`dbt_celery.dbt.selection`, no ``dbt ls``), and the edges come
from dbt's own linker with the test edges ``dbt build`` schedules on (a failing test
skips the children of the model it tests), restricted to the selection the way dbt does
it. Nothing here re-implements dbt's selector grammar.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

from dbt_celery.core.plan import GraphNode
from dbt_celery.core.spec import RunSpec
from dbt_celery.dbt import selection
from dbt_celery.dbt.commands import Workspace, parse_command
from dbt_celery.dbt.invocation import DbtInvocation
from dbt_celery.errors import DbtInvocationError, ProfileError, SelectionError

#: Resource types ``dbt build`` reports a result for, each of which gets a consumer
#: (exposures and saved queries as ``no-op``).
BUILDABLE_TYPES = frozenset({"model", "seed", "snapshot", "test", "unit_test", "function", "exposure", "saved_query"})
#: The manifest collections those nodes live in.
_COLLECTIONS = ("nodes", "unit_tests", "functions", "exposures", "saved_queries")


@dataclasses.dataclass(frozen=True)
class ProjectGraph:
    """The selected nodes of a project with the edges ``dbt build`` schedules on."""

    nodes: Mapping[str, GraphNode]
    manifest: Any = dataclasses.field(default=None, compare=False, repr=False)
    #: dbt's ``Graph`` of the whole manifest with build's test edges (what a build may reuse).
    linked: Any = dataclasses.field(default=None, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.nodes)

    @classmethod
    def load(cls, spec: RunSpec, workspace: Workspace) -> ProjectGraph:
        """Parse the project (partial parsing reused) and resolve the run's selection."""
        return cls.select(spec, workspace, parse_project(spec, workspace))

    @classmethod
    def select(cls, spec: RunSpec, workspace: Workspace, manifest: Any) -> ProjectGraph:
        """The graph of what ``spec``'s ``dbt build`` runs, selected on an already parsed ``manifest``."""
        selected = selection.resolve(spec, workspace, manifest)
        buildable = _buildable(manifest, selected.unique_ids)
        if not buildable:
            flags = " ".join(_describe_selection(spec)) or "(everything)"
            raise SelectionError(f"the selection {flags} matches no node that dbt build would run")
        return cls.from_manifest(manifest, buildable, selected.graph)

    @classmethod
    def from_manifest(cls, manifest: Any, selected: Iterable[str], graph: Any = None) -> ProjectGraph:
        """Build the graph of ``selected`` from a parsed dbt ``Manifest`` (and dbt's linked ``Graph`` of it)."""
        buildable = _buildable(manifest, selected)
        unit_tests = {uid for uid in buildable if uid in manifest.unit_tests}
        full = selection.linked_graph(manifest) if graph is None else graph
        subset = full.get_subset_graph(buildable - unit_tests).graph
        # dbt links the tests of every ancestor to a node. The order they impose holds
        # with the direct edges alone, so consumers check far fewer parents; dbt's own
        # dependency edges stay, so a test is always a child of the models it tests.
        graph = transitive_reduction(subset)
        graph.add_edges_from((u, v) for u, v, kind in subset.edges(data="edge_type") if kind != "parent_test")

        parents = {uid: set(graph.predecessors(uid)) for uid in graph.nodes}
        # dbt runs a model's unit tests right before the model, and skips the model
        # when one fails: a unit test sits between the model's parents and the model.
        model_parents = {uid: set(ups) for uid, ups in parents.items()}
        for uid in unit_tests:
            model = manifest.unit_tests[uid].depends_on.nodes[0]
            # Every unit test of a model waits for the model's own parents only, never for
            # another unit test of the same model (dbt runs them in an arbitrary order).
            parents[uid] = set(model_parents.get(model, ()))
            if model in parents:
                parents[model].add(uid)
        children: dict[str, set[str]] = {uid: set() for uid in parents}
        for uid, ups in parents.items():
            for parent in ups:
                children[parent].add(uid)

        nodes = {}
        for uid in parents:
            node = _lookup(manifest, uid)
            nodes[uid] = GraphNode(
                unique_id=uid,
                resource_type=str(node.resource_type),
                name=_display_name(node),
                selector=_selector(node, uid in unit_tests),
                parents=tuple(sorted(parents[uid])),
                children=tuple(sorted(children[uid])),
                tests=tuple(sorted(_tests_of(manifest, uid, parents))),
            )
        return cls(nodes=nodes, manifest=manifest, linked=full)

    def roots(self) -> list[str]:
        """Nodes with no parent in the selection."""
        return [uid for uid, node in self.nodes.items() if not node.parents]


def transitive_reduction(graph: Any) -> Any:
    """The transitive reduction of a DAG (a networkx ``DiGraph``): an edge u→v stays unless a longer path joins them.

    What ``networkx.transitive_reduction`` returns (nodes, no edge data), in O(edges) operations
    on bitsets instead of a traversal from every node: at 2,000 nodes, milliseconds rather than seconds.
    """
    import networkx

    order = list(networkx.topological_sort(graph))  # raises NetworkXUnfeasible on a cycle
    bit = {node: 1 << index for index, node in enumerate(order)}
    below: dict[Any, int] = {}  # every node reachable from a node, as a bitset
    reduced = networkx.DiGraph()
    reduced.add_nodes_from(graph.nodes)
    for node in reversed(order):
        successors = list(graph.successors(node))
        # A successor is reached another way when it lies below one of the node's other successors.
        via_others = 0
        for successor in successors:
            via_others |= below[successor]
        reduced.add_edges_from((node, s) for s in successors if not via_others & bit[s])
        reach = via_others
        for successor in successors:
            reach |= bit[successor]
        below[node] = reach
    return reduced


def parse_project(spec: RunSpec, workspace: Workspace) -> Any:
    """Parse the project into dbt's ``Manifest``, reusing and sharing its partial-parse state."""
    spec.check_project()
    workspace.adopt_partial_parse(spec.project_dir)
    manifest = _parse(spec, workspace)
    workspace.share_partial_parse(spec.project_dir)
    return manifest


def _parse(spec: RunSpec, workspace: Workspace) -> Any:
    invocation = DbtInvocation(parse_command(spec, workspace), cwd=spec.project_dir)
    invocation.run()
    result = invocation.result
    if invocation.error or not invocation.success:
        message = invocation.error or "dbt parse failed"
        if _is_profile_problem(result, message):
            raise ProfileError(f"dbt could not load the profile for {spec.project_dir}: {message}")
        raise DbtInvocationError(f"dbt parse failed for {spec.project_dir}: {message}")
    return result.result


def _is_profile_problem(result: Any, message: str) -> bool:
    """Say whether dbt failed on the profile rather than on the project's own files."""
    if type(getattr(result, "exception", None)).__name__ == "DbtProfileError":
        return True  # unknown target, invalid credentials
    lowered = message.lower()
    return "profiles.yml" in lowered or "could not find profile named" in lowered


def _describe_selection(spec: RunSpec) -> list[str]:
    parts = []
    if spec.select:
        parts.append("--select " + " ".join(spec.select))
    if spec.exclude:
        parts.append("--exclude " + " ".join(spec.exclude))
    if spec.selector:
        parts.append("--selector " + spec.selector)
    return parts


def _buildable(manifest: Any, selected: Iterable[str]) -> set[str]:
    """The selected nodes ``dbt build`` reports a result for."""
    return set(_with_their_models(manifest, [uid for uid in selected if _is_buildable(manifest, uid)]))


def _lookup(manifest: Any, unique_id: str) -> Any:
    """A node, unit test, function, exposure or saved query of the manifest (None if none)."""
    for collection in _COLLECTIONS:
        node = getattr(manifest, collection, {}).get(unique_id)
        if node is not None:
            return node
    return None


def _is_buildable(manifest: Any, unique_id: str) -> bool:
    node = _lookup(manifest, unique_id)
    if node is None or str(node.resource_type) not in BUILDABLE_TYPES:
        return False
    # Ephemeral models are inlined into their children: dbt builds nothing for them.
    return getattr(node.config, "materialized", None) != "ephemeral"


def _with_their_models(manifest: Any, buildable: list[str]) -> list[str]:
    """Drop unit tests whose model is not selected: dbt build runs a unit test only right before its model."""
    chosen = set(buildable)
    return [
        uid
        for uid in buildable
        if uid not in manifest.unit_tests or manifest.unit_tests[uid].depends_on.nodes[0] in chosen
    ]


def _display_name(node: Any) -> str:
    version = getattr(node, "version", None)
    return f"{node.name}.v{version}" if version is not None else node.name


def _selector(node: Any, is_unit_test: bool) -> str:
    """A selector that matches exactly this node (dbt ignores bare unique ids)."""
    fqn = ".".join(str(part) for part in node.fqn)
    return f"fqn:{fqn}"  # unit_test: accepts only NAME or PACKAGE.NAME; fqn: takes a unit test's full fqn


def _tests_of(manifest: Any, unique_id: str, selected: Mapping[str, Any]) -> list[str]:
    """The selected tests that depend on ``unique_id`` (a test on two models counts for both)."""
    if not unique_id.startswith(("model.", "seed.", "snapshot.")):
        return []
    return [child for child in manifest.child_map.get(unique_id, ()) if child in selected and child.startswith("test.")]
