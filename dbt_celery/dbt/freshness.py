"""Source freshness before a build: which planned nodes read a stale source.

``dbt source freshness`` runs on the sources the run's nodes read (directly or through
ephemeral models), and writes ``sources.json``. A source is *stale* when dbt says
``error`` (older than its ``error_after``) or ``runtime error`` (its freshness could not
be checked); ``warn`` is not stale, as in dbt. Every planned node downstream of a stale
source is skipped, its message naming the source.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from dbt_celery.core.spec import RunSpec
from dbt_celery.dbt.commands import Workspace, freshness_command
from dbt_celery.dbt.invocation import DbtInvocation
from dbt_celery.errors import DbtInvocationError

#: dbt's freshness statuses that keep a source's descendants from building.
STALE_STATUSES = frozenset({"error", "runtime error"})
SOURCES_FILE = "sources.json"


def stale_source_skips(spec: RunSpec, workspace: Workspace, manifest: Any, planned: Iterable[str]) -> dict[str, str]:
    """Map each planned node downstream of a stale source to the reason it is not built."""
    planned = set(planned)
    sources = upstream_sources(manifest, planned)
    if not sources:
        return {}
    statuses = freshness_statuses(spec, workspace, manifest, sources)
    stale = {uid: status for uid, status in statuses.items() if status in STALE_STATUSES}
    skips: dict[str, str] = {}
    for source_id in sorted(stale):
        source = manifest.sources[source_id]
        reason = f"not built: source {source.source_name}.{source.name} is stale (freshness {stale[source_id]})"
        for uid in _descendants(manifest, source_id):
            if uid in planned:
                skips.setdefault(uid, reason)
    return skips


def upstream_sources(manifest: Any, nodes: Iterable[str]) -> list[str]:
    """The sources with a freshness check that ``nodes`` read, directly or through other nodes."""
    seen: set[str] = set()
    pending = list(nodes)
    while pending:
        for parent in manifest.parent_map.get(pending.pop(), ()):
            if parent not in seen:
                seen.add(parent)
                pending.append(parent)
    return sorted(uid for uid in seen if uid in manifest.sources and manifest.sources[uid].has_freshness)


def freshness_statuses(spec: RunSpec, workspace: Workspace, manifest: Any, sources: list[str]) -> dict[str, str]:
    """Run ``dbt source freshness`` on ``sources``; return dbt's status for each (``runtime error`` if dbt has none)."""
    selectors = [f"source:{s.package_name}.{s.source_name}.{s.name}" for s in map(manifest.sources.get, sources)]
    output = workspace.target_path / SOURCES_FILE
    invocation = DbtInvocation(
        [*freshness_command(spec, workspace, selectors), "--output", str(output)],
        mode=spec.invocation,
        cwd=spec.project_dir,
        manifest=manifest if spec.invocation == "in_process" else None,
    )
    invocation.run()
    try:
        results = json.loads(output.read_text()).get("results", [])
    except (OSError, ValueError):
        raise DbtInvocationError(
            f"dbt source freshness wrote no results: {invocation.error or 'no error message'}"
        ) from None
    statuses = {result["unique_id"]: result["status"] for result in results}
    # dbt 1.11 leaves a source whose freshness query failed out of sources.json: it could not be checked.
    return {source: statuses.get(source, "runtime error") for source in sources}


def _descendants(manifest: Any, unique_id: str) -> set[str]:
    found: set[str] = set()
    pending = [unique_id]
    while pending:
        for child in manifest.child_map.get(pending.pop(), ()):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found
