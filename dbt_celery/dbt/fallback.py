"""A consumer's own build of its node, when the producer's build cannot help any more.

Each inline build of a node takes that build's lease first, so a second delivery of the
same consumer message (a broker redelivery) builds nothing while the first one works,
and the record is written only by the lease's holder.
"""

from __future__ import annotations

import threading
import time

from dbt_celery.core.keeper import LeaseKeeper, beat_interval
from dbt_celery.core.plan import GraphNode
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
    invocation = DbtInvocation(
        fallback_command(spec, workspace, node.resource_type, node.selector),
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
        if keeper.lost or not store.put_events(run_id, [event], held):
            return None
        store.release(held)
        return event
    finally:
        workspace.remove()


def _slug(unique_id: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in unique_id)[:120]
