"""One run at a time per target: the guard against overlapping runs.

A beat schedule does not stop a run from starting while the previous one still builds
(or while its consumers still build nodes inline), and two builds of the same tables at
once corrupt each other or, on DuckDB, fail on the file lock. A run's producer therefore
takes the target's *turn* before it plans: it waits (by retrying its task) while the
run holding the turn is not done. The target is what dbt writes to
(:func:`dbt_celery.dbt.target.target_identity`), not how the profile was spelled.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Mapping

from dbt_celery.core.store import StatusStore


def target_key(identity: Mapping[str, Any]) -> str:
    """A short stable key for a target identity."""
    return hashlib.sha1(json.dumps(dict(identity), sort_keys=True).encode()).hexdigest()[:16]


def take_turn(store: StatusStore, run_id: str, key: str, is_done: Callable[[str], bool]) -> str | None:
    """Take the target's turn for ``run_id``; return None when taken, else the run still building."""
    scope = f"target-{key}"
    (active,) = store.documents(scope, ["active"])
    previous = active["run_id"] if active else None
    if previous == run_id:
        return None
    if previous is not None and not is_done(previous):
        return previous
    # Whoever claims "after <previous>" first is next; the others wait for that run.
    if store.claim(scope, f"after_{previous or 'none'}"):
        store.put_documents(scope, {"active": {"run_id": run_id}})
        return None
    (active,) = store.documents(scope, ["active"])
    return active["run_id"] if active and active["run_id"] != previous else previous or "another run"
