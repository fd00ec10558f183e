"""A consumer's own build of its node, when the producer's build cannot help any more.

Each inline build of a node takes that build's lease first, so a second delivery of the
same consumer message (a broker redelivery) builds nothing while the first one works,
and the record is written only by the lease's holder.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from dbt_celery.core.artifacts import MANIFEST
from dbt_celery.core.keeper import LeaseKeeper, beat_interval
from dbt_celery.core.plan import GraphNode, plan_summary
from dbt_celery.core.records import NodeEvent
from dbt_celery.core.spec import RunSpec
from dbt_celery.core.store import StatusStore
from dbt_celery.dbt.commands import Workspace, fallback_command
from dbt_celery.dbt.invocation import DbtInvocation, events_for_unreported
from dbt_celery.dbt.producer import holder_name


def build_node(
    store: StatusStore, spec: RunSpec, run_id: str, node: GraphNode, build: int, deadline: float
) -> NodeEvent | None:
    """Build one node alone with the run's user flags; return dbt's verdict, or None if not ours to build.

    dbt runs in this process only when the task runs on a process's main thread (a
    prefork or solo worker); on a threads pool it runs as a subprocess, since dbt
    cannot share a process with another invocation.
    """
    held = store.build_lease(run_id, node.unique_id, build, holder_name(), spec.heartbeat_timeout)
    if held is None:
        return None
    workspace = Workspace.create(spec, run_id, f"fallback-{_slug(node.unique_id)}-{build}")
    in_process = spec.invocation == "in_process" and threading.current_thread() is threading.main_thread()
    defer_state = None
    if spec.defer and spec.state:
        defer_state = state_without(Path(spec.state), plan_summary(store, run_id) or {}, workspace.root / "state")
    invocation = DbtInvocation(
        fallback_command(spec, workspace, node.resource_type, node.selector, defer_state),
        mode="in_process" if in_process else "subprocess",
        cwd=spec.project_dir,
    )

    def stop_reason() -> str | None:
        if store.cancelled(run_id) is not None:
            return "the run was cancelled"
        return "the run's timeout passed" if time.time() > deadline else None

    keeper = LeaseKeeper(store, held, beat_interval(spec.heartbeat_timeout), lambda _: invocation.stop(), stop_reason)
    try:
        with keeper:
            found = [event for event in invocation if event.unique_id == node.unique_id]
        if not found:
            reason = invocation.error or f"dbt {node.resource_type} --select {node.selector} did not run the node"
            found = events_for_unreported([node.unique_id], [], workspace.run_results, reason)
        event = found[-1].replace(resolved_by="fallback", thread="fallback")
        rebuilt = _run_result(workspace.run_results, node.unique_id)
        rebuilt_results = {node.unique_id: rebuilt} if rebuilt is not None else None
        if keeper.lost or not store.put_events(run_id, [event], held, rebuilt_results):
            return None
        store.release(held)
        return event
    finally:
        workspace.remove()


def _slug(unique_id: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in unique_id)[:120]


def state_without(state: Path, unique_ids: Iterable[str], directory: Path) -> Path:
    """A copy of a state folder's manifest.json without ``unique_ids``, in ``directory``.

    A rebuild selects one node; with ``--defer``, dbt would resolve its refs to every other
    node through the state. The run's own nodes were selected in the build, so their refs
    resolved to this run's relations: leaving them out of the state keeps it that way.
    """
    manifest = json.loads((state / MANIFEST).read_text())
    for unique_id in unique_ids:
        manifest.get("nodes", {}).pop(unique_id, None)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).write_text(json.dumps(manifest))
    return directory


def _run_result(run_results: Path, unique_id: str) -> dict[str, Any] | None:
    """The node's entry in an inline build's run_results.json, if dbt wrote one."""
    try:
        results = json.loads(run_results.read_text()).get("results", [])
    except (OSError, ValueError, AttributeError):
        return None
    return next((result for result in results if result.get("unique_id") == unique_id), None)
