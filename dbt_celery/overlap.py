"""One run at a time per project and target: the guard against overlapping runs.

A beat schedule does not stop a run from starting while the previous one still builds
(or while its consumers still build nodes inline), and two builds of the same tables at
once corrupt each other or, on DuckDB, fail on the file lock. A run's producer therefore
takes the project's *turn* before it plans: it waits (by retrying its task) while the
previous run holding the turn is not done.
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable

from dbt_celery.spec import RunSpec
from dbt_celery.store import StatusStore


def project_key(spec: RunSpec) -> str:
    """Identify the warehouse objects a run builds: project, profile and target."""
    identity = [spec.project_dir, spec.profiles_dir, spec.target, dict(spec.profile or {})]
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def take_turn(store: StatusStore, run_id: str, spec: RunSpec, is_done: Callable[[str], bool]) -> str | None:
    """Take the project's turn for ``run_id``; return None when taken, else the run still building."""
    scope = f"project-{project_key(spec)}"
    active = store.document(scope, "active")
    previous = active["run_id"] if active else None
    if previous == run_id:
        return None
    if previous is not None and not is_done(previous):
        return previous
    # Whoever claims "after <previous>" first is next; the others wait for that run.
    if store.claim(scope, f"after_{previous or 'none'}"):
        store.put_document(scope, "active", {"run_id": run_id})
        return None
    active = store.document(scope, "active")
    return active["run_id"] if active and active["run_id"] != previous else previous or "another run"
