"""A consumer's own build of its node, when the producer's build cannot help any more."""

from __future__ import annotations

import threading

from dbt_celery.commands import Workspace, fallback_command
from dbt_celery.events import NodeEvent
from dbt_celery.invocation import DbtInvocation, events_for_unreported
from dbt_celery.project import GraphNode
from dbt_celery.spec import RunSpec


def build_node(spec: RunSpec, run_id: str, node: GraphNode, attempt: int) -> NodeEvent:
    """Build one node alone with the run's user flags and return dbt's verdict on it.

    dbt runs in this process only when the task runs on a process's main thread (a
    prefork or solo worker); on a threads pool it runs as a subprocess, since dbt
    cannot share a process with another invocation.
    """
    workspace = Workspace.create(spec, run_id, f"fallback-{_slug(node.unique_id)}-{attempt}")
    in_process = spec.invocation == "in_process" and threading.current_thread() is threading.main_thread()
    invocation = DbtInvocation(
        fallback_command(spec, workspace, node.resource_type, node.selector),
        mode="in_process" if in_process else "subprocess",
        cwd=spec.project_dir,
    )
    found = [event for event in invocation if event.unique_id == node.unique_id]
    if not found:
        reason = invocation.error or f"dbt {node.resource_type} --select {node.selector} did not run the node"
        found = events_for_unreported([node.unique_id], [], workspace.run_results, reason)
    return found[-1].replace(resolved_by="fallback")


def _slug(unique_id: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in unique_id)[:120]
