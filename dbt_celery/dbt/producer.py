"""The producer: plan a run, then run its single ``dbt build`` and record every node.

Free of Celery: the task in :mod:`dbt_celery.celery.tasks` hands in the store and a
function that enqueues consumers. The producer works under the run's lease
(:mod:`dbt_celery.core.keeper`): every record it writes is fenced by it, so a
producer that stalled past its lease and was replaced writes nothing more and stops
its dbt. A delivery that finds a live (or finished) producer builds nothing; one that
finds a dead producer *resumes* it: a new lease generation builds every node still
unreported in one ``dbt build --select ...``. When dbt ends, each planned node dbt
never reported is recorded explicitly, so no consumer waits for it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

from dbt_celery.core.artifacts import MANIFEST
from dbt_celery.core.keeper import LOST, LeaseKeeper, beat_interval
from dbt_celery.core.plan import RunPlan
from dbt_celery.core.policy import MAX_PRODUCER_GENERATIONS
from dbt_celery.core.records import (
    PASSING_STATES,
    NodeEvent,
    NodeState,
    ProducerPhase,
    ProducerState,
    not_run_event,
)
from dbt_celery.core.spec import RunSpec
from dbt_celery.core.store import PRODUCER_LEASE, HeldLease, StatusStore
from dbt_celery.dbt import selection
from dbt_celery.dbt.commands import Workspace, build_command, prune_workspaces
from dbt_celery.dbt.freshness import stale_source_skips
from dbt_celery.dbt.invocation import DbtInvocation, events_for_unreported
from dbt_celery.dbt.project import ProjectGraph, parse_project
from dbt_celery.errors import ConfigurationError, DbtCeleryError

log = logging.getLogger(__name__)

#: Sends the consumers of some nodes of a plan that nobody sent yet.
Enqueue = Callable[[RunPlan, Iterable[str]], object]
#: Wakes the consumers (if sent) of nodes whose records were just written.
Wake = Callable[[RunPlan, list[str]], object]
#: Told the producer's state whenever the count of reported nodes changes.
Progress = Callable[[ProducerState], None]


class DuplicateProducer(DbtCeleryError):
    """The run already has a live or finished producer; this delivery builds nothing."""


class _LeaseLost(Exception):
    """A fenced write was refused: another producer holds the run now."""


def holder_name() -> str:
    """A name for this process's lease, unique per attempt."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def run_producer(
    store: StatusStore,
    run_id: str,
    spec: RunSpec,
    enqueue: Enqueue,
    on_beat: Callable[[], None] = lambda: None,
    keep_workspaces_for: float | None = None,
    wake: Wake = lambda plan, ids: None,
    on_progress: Progress = lambda state: None,
) -> dict[str, Any]:
    """Take the run's lease, then plan (or resume) and build; return a summary of the build."""
    before = store.liveness(run_id, PRODUCER_LEASE)
    if before.lease is not None and before.lease.generation >= MAX_PRODUCER_GENERATIONS:
        raise DuplicateProducer(f"run {run_id}: the producer died {before.lease.generation} times; not resuming")
    held = store.acquire(run_id, PRODUCER_LEASE, holder_name(), spec.heartbeat_timeout)
    if held is None:
        raise DuplicateProducer(f"run {run_id} already has a live or finished producer")
    run = store.run(run_id)
    deadline = run.deadline if run is not None else time.time() + spec.timeout
    return Producer(store, held, spec, enqueue, deadline, on_beat, keep_workspaces_for, wake, on_progress).run()


class Producer:
    """One lease generation of a run's producer, from planning to the last record."""

    def __init__(
        self,
        store: StatusStore,
        held: HeldLease,
        spec: RunSpec,
        enqueue: Enqueue,
        deadline: float,
        on_beat: Callable[[], None],
        keep_workspaces_for: float | None = None,
        wake: Wake = lambda plan, ids: None,
        on_progress: Progress = lambda state: None,
    ) -> None:
        self.store, self.held, self.spec, self.enqueue, self.deadline = store, held, spec, enqueue, deadline
        self.on_beat, self.wake, self.on_progress = on_beat, wake, on_progress
        #: Seconds a run's workspace (its run_results.json and logs) is kept: as long as its records.
        self.keep_workspaces_for = keep_workspaces_for
        self.run_id = held.run_id
        now = time.time()
        self.state = ProducerState(
            ProducerPhase.PLANNING, now, generation=held.generation, started_at=now, worker=held.lease.holder
        )
        self.plan: RunPlan | None = None
        self.reported: set[str] = set()
        self.invocation: DbtInvocation | None = None
        self.keeper = LeaseKeeper(
            store, held, beat_interval(spec.heartbeat_timeout), self._stop, self._stop_reason, self._progress
        )

    def run(self) -> dict[str, Any]:
        """Plan or resume, build, and record; on any error, record what was left unbuilt."""
        with self.keeper:
            try:
                return self._build()
            except _LeaseLost:
                return self._summary(self.invocation, lost=True)
            except BaseException as exc:
                error = str(exc) if isinstance(exc, ConfigurationError) else f"{type(exc).__name__}: {exc}"
                bad_input = isinstance(exc, ConfigurationError)
                self._end(ProducerPhase.FAILED, f"producer failed: {error}", error=error, bad_input=bad_input)
                raise

    # -- steps -----------------------------------------------------------------------
    def _build(self) -> dict[str, Any]:
        self._write_state()
        if (reason := self._stop_reason()) is not None:
            return self._end(ProducerPhase.CANCELLED, f"not built: {reason}", error=reason)
        if self.keep_workspaces_for:
            prune_workspaces(self.spec, self.keep_workspaces_for)
        workspace = Workspace.create(self.spec, self.run_id, f"producer-{self.held.generation}")
        plan = RunPlan.load(self.store, self.run_id)
        resumed = plan is not None
        selectors: list[str] | None = None
        skips: dict[str, str] = {}
        linked = None  # dbt's graph with test edges, when this producer selected on the manifest it builds
        if plan is None:
            graph = ProjectGraph.load(self.spec, workspace)
            plan, manifest, linked = RunPlan(self.run_id, dict(graph.nodes)), graph.manifest, graph.linked
            self._fenced(plan.save(self.store, self.held))
            if self.spec.source_freshness:
                skips = stale_source_skips(self.spec, workspace, manifest, plan.nodes)
        else:
            manifest = parse_project(self.spec, workspace)
        self.plan = plan
        if resumed:
            selectors = self._resume_selection(plan)
        elif skips:
            self._record([_skipped_event(plan, uid, reason) for uid, reason in skips.items()])
            selectors = [node.selector for uid, node in plan.nodes.items() if uid not in skips]
        self.enqueue(plan, plan.roots())
        self.state = self.state.replace(phase=ProducerPhase.RUNNING, total=len(plan.nodes), done=len(self.reported))
        self._write_state()
        self.on_progress(self.state)
        if selectors == [] or self.keeper.stop_reason is not None:
            return self._finish(workspace, None)
        invocation = DbtInvocation(
            build_command(self.spec, workspace, selectors),
            mode=self.spec.invocation,
            cwd=self.spec.project_dir,
            manifest=manifest if self.spec.invocation == "in_process" else None,
        )
        self.invocation = invocation
        # An in-process build takes the test edges planning linked (a subprocess links its own).
        with selection.test_edges_reused(manifest, linked) if linked is not None else contextlib.nullcontext():
            for batch in invocation.batches():
                events = [event for event in batch if event.unique_id in plan.nodes]
                if events and not self.keeper.lost:
                    if not self.store.put_events(self.run_id, events, self.held):
                        self.keeper.stop(LOST)  # stops dbt; the loop drains what it still says
                        continue
                    self._reported(events)
        return self._finish(workspace, invocation)

    def _resume_selection(self, plan: RunPlan) -> list[str]:
        """Selectors of the unreported nodes a resumed build may run; the rest are recorded as blocked."""
        records = self.store.node_events(self.run_id, plan.nodes)
        self.reported = set(records)
        failed = {uid for uid, event in records.items() if event.outcome not in PASSING_STATES}
        blocked: dict[str, str | None] = {}

        def blocker(uid: str) -> str | None:
            if uid not in blocked:
                blocked[uid] = None  # cycles cannot happen in dbt's DAG; this only guards recursion
                parents = plan.nodes[uid].parents
                blocked[uid] = next((p for p in parents if p in failed), None) or next(
                    (b for p in parents if p not in records and (b := blocker(p)) is not None), None
                )
            return blocked[uid]

        selectors, skipped = [], []
        for uid, node in plan.nodes.items():
            if uid in records:
                continue
            cause = blocker(uid)
            if cause is None:
                selectors.append(node.selector)
            else:
                skipped.append(not_run_event(uid, f"not built: upstream node {cause} failed", upstream_failed=True))
        self._record(skipped)
        log.info("run %s: resuming the build of %d node(s)", self.run_id, len(selectors))
        return selectors

    def _finish(self, workspace: Workspace, invocation: DbtInvocation | None) -> dict[str, Any]:
        if self.keeper.lost:
            return self._summary(invocation, lost=True)
        self._store_artifacts(workspace, invocation)
        if (reason := self.keeper.stop_reason) is not None:
            return self._end(ProducerPhase.CANCELLED, f"not built: {reason}", invocation=invocation, error=reason)
        assert self.plan is not None
        error = invocation.error if invocation is not None else None
        unreported = events_for_unreported(
            self.plan.nodes, self.reported, workspace.run_results, error or "dbt finished without running this node"
        )
        self._record(unreported)
        phase = ProducerPhase.FAILED if error else ProducerPhase.FINISHED
        success = invocation.success if invocation is not None else True
        return self._end(phase, None, invocation=invocation, dbt_success=success, error=error)

    def _store_artifacts(self, workspace: Workspace, invocation: DbtInvocation | None) -> None:
        """Keep what dbt wrote (run_results.json, manifest.json) in the store, for the run's combined artifacts."""
        run_results = _json_file(workspace.run_results) if invocation is not None else None
        manifest = _json_file(workspace.target_path / MANIFEST)
        self._fenced(self.store.put_build_artifacts(self.run_id, self.held, run_results, manifest))

    def _end(
        self,
        phase: ProducerPhase,
        unreported_reason: str | None,
        *,
        invocation: DbtInvocation | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Record the nodes left (when a reason is given), the final state, and give the lease up."""
        if self.keeper.lost:
            return self._summary(invocation, lost=True)
        if unreported_reason is not None and self.plan is not None:
            self._record([not_run_event(uid, unreported_reason) for uid in set(self.plan.nodes) - self.reported])
        now = time.time()
        self.state = self.state.replace(phase=phase, updated_at=now, finished_at=now, done=len(self.reported), **fields)
        self._write_state()
        self.store.release(self.held)
        return self._summary(invocation)

    # -- the keeper's callbacks --------------------------------------------------------
    def _stop_reason(self) -> str | None:
        cancelled = self.store.cancelled(self.run_id)
        if cancelled is not None:
            return f"the run was cancelled ({cancelled})"
        if time.time() > self.deadline:
            return "the run's timeout passed"
        return None

    def _stop(self, reason: str) -> None:
        if self.invocation is not None:
            self.invocation.stop()

    def _progress(self) -> None:
        if self.state.phase is ProducerPhase.RUNNING and self.state.done != len(self.reported):
            self.state = self.state.replace(done=len(self.reported), updated_at=time.time())
            self.store.put_producer(self.run_id, self.state, self.held)
        self.on_beat()

    # -- writes ------------------------------------------------------------------------
    def _record(self, events: list[NodeEvent]) -> None:
        if events:
            self._fenced(self.store.put_events(self.run_id, events, self.held))
            self._reported(events)

    def _reported(self, events: list[NodeEvent]) -> None:
        """After a write: wake the nodes' waiting consumers and say how far the run got."""
        self.reported |= {event.unique_id for event in events}
        if self.plan is not None:
            self.wake(self.plan, [event.unique_id for event in events])
            self.on_progress(self.state.replace(done=len(self.reported)))

    def _write_state(self) -> None:
        self._fenced(self.store.put_producer(self.run_id, self.state.replace(updated_at=time.time()), self.held))

    def _fenced(self, written: bool) -> None:
        if not written:
            self.keeper.stop(LOST)
            raise _LeaseLost()

    def _summary(self, invocation: DbtInvocation | None, *, lost: bool = False) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "generation": self.held.generation,
            "nodes": len(self.plan.nodes) if self.plan else 0,
            "reported": len(self.reported),
            "dbt_success": invocation.success if invocation is not None else None,
            "error": invocation.error if invocation is not None else None,
            "phase": self.state.phase.value,
            "lease_lost": lost,
            "stopped": self.keeper.stop_reason,
        }


def _skipped_event(plan: RunPlan, unique_id: str, reason: str) -> NodeEvent:
    """A node left out of the build on purpose (downstream of a stale source): dbt status skipped."""
    return NodeEvent(unique_id, plan.nodes[unique_id].resource_type, "skipped", NodeState.SKIPPED, message=reason)


def _json_file(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
