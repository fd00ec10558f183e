"""The run's own dbt artifacts: one ``run_results.json`` and ``manifest.json`` for the whole run.

A run's nodes are built by several dbt invocations: the producer's ``dbt build`` (and,
after a producer died, a resumed build of what it left), plus one inline build per node a
consumer rebuilt on a retry. Each stores what dbt wrote for it; :func:`combine` merges
them into the document a single ``dbt build`` would have written:

* the first build's metadata and ``args`` (what ``dbt retry`` re-runs);
* each node's result from the last invocation that built it: a later producer generation
  over an earlier one, an inline rebuild over both (so a repaired node carries its repair);
* an entry ``skipped`` for every planned node no invocation ran (cancelled, not run,
  left out after a failure, downstream of a stale source), with dbt-celery's reason as
  its message, as dbt writes the nodes it skips.

The result is in dbt's own schema (dbt's artifact classes load it), so ``dbt retry
--state DIR`` and ``--state`` selection read it. Free of dbt and Celery: plain JSON in, plain JSON out.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from dbt_celery.core.plan import load_nodes, plan_summary
from dbt_celery.core.policy import MAX_PRODUCER_GENERATIONS
from dbt_celery.core.spec import RunSpec
from dbt_celery.core.store import StatusStore
from dbt_celery.core.summary import summarize

RUN_RESULTS = "run_results.json"
MANIFEST = "manifest.json"
#: The statuses ``dbt retry`` re-runs (dbt's ``RETRYABLE_STATUSES``).
RETRYABLE_STATUSES = frozenset({"error", "fail", "skipped", "runtime error", "partial success"})
#: The dbt thread name of the entries dbt-celery writes for nodes nothing ran.
NOT_RUN_THREAD = "dbt-celery"


@dataclasses.dataclass(frozen=True)
class RunArtifacts:
    """The combined ``run_results.json`` and the ``manifest.json`` of one run."""

    run_id: str
    run_results: dict[str, Any]
    manifest: dict[str, Any] | None

    def results(self) -> dict[str, dict[str, Any]]:
        """Each node's result entry, by unique id."""
        return {result["unique_id"]: result for result in self.run_results.get("results", [])}

    def retryable(self) -> list[str]:
        """The nodes ``dbt retry`` would select from these results: failed, errored, skipped, not run."""
        return sorted(uid for uid, result in self.results().items() if result.get("status") in RETRYABLE_STATUSES)

    def write(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Write both files into ``directory`` (made if needed); return their paths."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        documents = {RUN_RESULTS: self.run_results}
        if self.manifest is not None:
            documents[MANIFEST] = self.manifest
        written = []
        for name, document in documents.items():
            path = folder / name
            path.write_text(json.dumps(document, indent=2))
            written.append(path)
        return written


def read_artifacts(store: StatusStore, run_id: str) -> RunArtifacts:
    """The run's combined artifacts as the store holds them now (a run still going gives what is known)."""
    status = summarize(store, run_id)
    builds, rebuilt, manifest = store.build_artifacts(run_id, MAX_PRODUCER_GENERATIONS, list(status.nodes))
    unbuilt = {uid: node.message or node.reason or "not run by dbt-celery" for uid, node in status.nodes.items()}
    return RunArtifacts(run_id, combine(builds, rebuilt, unbuilt), manifest)


def retry_spec(store: StatusStore, run_id: str, spec: RunSpec) -> RunSpec | None:
    """The spec of a run that rebuilds exactly the nodes ``dbt retry`` would pick from run ``run_id``.

    Those are the planned nodes whose combined result failed, errored or was skipped
    (not run included), selected one by one with no indirect selection, so nothing that
    passed is built again; every other flag is the earlier run's. None when nothing is left.
    """
    artifacts = read_artifacts(store, run_id)
    planned = plan_summary(store, run_id) or {}  # not a second full status read
    chosen = [uid for uid in artifacts.retryable() if uid in planned]
    if not chosen:
        return None
    nodes = load_nodes(store, run_id, chosen)
    selectors = tuple(nodes[uid].selector for uid in chosen)
    return dataclasses.replace(spec, select=selectors, exclude=(), selector=None, indirect_selection="empty")


def combine(
    builds: Iterable[Mapping[str, Any] | None],
    rebuilt: Mapping[str, Mapping[str, Any]],
    unbuilt: Mapping[str, str],
) -> dict[str, Any]:
    """Merge the run_results of a run's builds (in generation order) and its inline rebuilds.

    ``unbuilt`` maps every planned node to the reason to give should no invocation have
    a result for it.
    """
    documents = [dict(build) for build in builds if build]
    combined: dict[str, Any] = dict(documents[0]) if documents else _empty_document()
    results: dict[str, Mapping[str, Any]] = {}
    for document in documents:
        results.update((result["unique_id"], result) for result in document.get("results", []))
    results.update(rebuilt)
    for unique_id, reason in unbuilt.items():
        results.setdefault(unique_id, not_run_result(unique_id, reason))
    combined["results"] = list(results.values())
    return combined


def not_run_result(unique_id: str, reason: str) -> dict[str, Any]:
    """A run_results entry, status ``skipped``, for a node no dbt invocation of the run ran."""
    return {
        "status": "skipped",
        "timing": [],
        "thread_id": NOT_RUN_THREAD,
        "execution_time": 0.0,
        "adapter_response": {},
        "message": reason,
        "failures": None,
        "unique_id": unique_id,
        "compiled": None,
        "compiled_code": None,
        "relation_name": None,
        "batch_results": None,
    }


def _empty_document() -> dict[str, Any]:
    """The frame of a run_results.json for a run whose build never wrote one (its producer died first)."""
    return {
        "metadata": {
            "dbt_schema_version": "https://schemas.getdbt.com/dbt/run-results/v6.json",
            "dbt_version": "unknown",
            "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "invocation_id": None,
            "env": {},
        },
        "results": [],
        "elapsed_time": 0.0,
        "args": {"which": "build"},
    }
