"""The nodes a run's ``dbt build`` selects, resolved on the parsed manifest by the loaded dbt itself.

No second dbt invocation (``dbt ls``) is needed: the producer's own build command line is
turned into dbt's flags (so environment variables and the project's ``flags:`` count, as
they do for the build), the project is loaded the way ``dbt build`` loads it (selectors.yml
rendered with the run's vars and target, a ``default: true`` selector applied), and dbt's
``BuildTask`` selects on the graph ``dbt build`` schedules on (test edges included). That
way --select, --exclude, --selector, indirect selection of tests, the resource types of
build and the skipping of empty models are all dbt's own rules, never a copy of them.

The test edges are the costly part of that graph (dbt's ``Linker.add_test_edges`` grows
faster than the node count: 2.4 s at 2,002 nodes on the benchmark machine). The build
that follows on the same manifest would add them all over again; inside
:func:`test_edges_reused` it takes the selection's instead, and still writes its
graph summary and ``graph.gpickle`` as it always does.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import threading
from typing import Any, Iterator

from dbt_celery.core.spec import RunSpec
from dbt_celery.dbt.commands import Workspace, build_command
from dbt_celery.dbt.invocation import dbt_exclusively
from dbt_celery.errors import SelectionError

#: id(manifest) -> dbt's linked ``Graph`` of it, whose test edges a build on that manifest takes.
_REUSABLE_GRAPHS: dict[int, Any] = {}
_REUSE_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Selection:
    """What ``dbt build`` would select, with the graph it selected on."""

    #: Every node dbt build's selector returns, unit tests included (ephemeral models too).
    unique_ids: frozenset[str]
    #: dbt's ``Graph`` of the whole project with the test edges ``dbt build`` adds.
    graph: Any = dataclasses.field(compare=False, repr=False)


def resolve(spec: RunSpec, workspace: Workspace, manifest: Any) -> Selection:
    """Select the nodes of ``spec``'s ``dbt build`` on ``manifest``, raising :class:`SelectionError` if dbt cannot."""
    # dbt keeps its flags per process: set them only while no in-process invocation runs.
    with dbt_exclusively(spec.project_dir):
        # A copied context keeps dbt's invocation context (its view of the environment) to this call.
        return contextvars.copy_context().run(_resolve, build_command(spec, workspace), manifest)


def linked_graph(manifest: Any) -> Any:
    """dbt's ``Graph`` of ``manifest`` with the test edges of ``dbt build``, under the current dbt flags."""
    from dbt.compilation import Linker
    from dbt.graph import Graph

    linker = Linker()
    linker.link_graph(manifest)  # raises RuntimeError naming a cycle
    manifest.build_parent_and_child_maps()
    linker.add_test_edges(manifest)
    return Graph(linker.graph)


@contextlib.contextmanager
def test_edges_reused(manifest: Any, graph: Any) -> Iterator[None]:
    """While this block runs, dbt commands on ``manifest`` in this process take the test edges of ``graph``.

    ``graph`` must be :func:`linked_graph` of this very manifest under the build's flags
    (a :class:`Selection`'s graph): the edges dbt's linker would compute again are then
    copied from it, so the build schedules on exactly the graph it would have linked.
    """
    _wrap_add_test_edges()
    # Holding ``manifest`` here keeps its id from being reused while the entry exists.
    with _REUSE_LOCK:
        _REUSABLE_GRAPHS[id(manifest)] = graph
    try:
        yield
    finally:
        with _REUSE_LOCK:
            _REUSABLE_GRAPHS.pop(id(manifest), None)


def _wrap_add_test_edges() -> None:
    """Make dbt's ``Linker.add_test_edges`` take registered edges (once per process; else it runs as before)."""
    from dbt.compilation import Linker

    with _REUSE_LOCK:
        original = Linker.add_test_edges
        if getattr(original, "dbt_celery_reuse", False):
            return

        def add_test_edges(linker: Any, manifest: Any) -> None:
            linked = _REUSABLE_GRAPHS.get(id(manifest))
            if linked is None:
                original(linker, manifest)
            else:
                edges = linked.graph.edges(data="edge_type")
                linker.graph.add_edges_from(
                    ((up, down) for up, down, kind in edges if kind == "parent_test"), edge_type="parent_test"
                )

        add_test_edges.dbt_celery_reuse = True  # type: ignore[attr-defined]
        setattr(Linker, "add_test_edges", add_test_edges)  # noqa: B010 - a method replaced on the class


def _resolve(build_args: list[str], manifest: Any) -> Selection:
    from dbt.cli.flags import Flags, args_to_context
    from dbt.config.runtime import RuntimeConfig
    from dbt.flags import get_flags, set_flags
    from dbt.task.build import BuildTask
    from dbt_common.context import set_invocation_context
    from dbt_common.exceptions import DbtBaseException

    previous = get_flags()
    try:
        flags = Flags(args_to_context(build_args))
        set_flags(flags)
        set_invocation_context(dict(os.environ))  # env_var() in profiles.yml and selectors.yml
        graph = linked_graph(manifest)
        task = BuildTask(flags, RuntimeConfig.from_args(flags), manifest)
        task.graph = graph
        # As dbt build's get_graph_queue: unit tests included (dbt runs them beside their model).
        selected = task.get_node_selector(no_unit_tests=False).get_selected(task.get_selection_spec())
    except (RuntimeError, DbtBaseException) as exc:  # DbtRuntimeError is a RuntimeError; so is a cycle
        raise SelectionError(f"dbt could not resolve the selection: {_one_line(exc)}") from None
    finally:
        set_flags(previous)
    return Selection(unique_ids=frozenset(selected), graph=graph)


def _one_line(exc: BaseException) -> str:
    """dbt's own message, without the "Runtime Error" heading its exceptions print."""
    return " ".join(str(getattr(exc, "msg", None) or exc).split())
