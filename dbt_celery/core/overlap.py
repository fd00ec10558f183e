"""One run at a time per target: the guard against overlapping runs.

A beat schedule does not stop a run from starting while the previous one still builds
(or while its consumers still build nodes inline), and two builds of the same tables at
once corrupt each other or, on DuckDB, fail on the file lock. Two guards keep them apart:

* :func:`admit`, when ``dbt_celery.start_run`` is asked for a run (a beat tick): by the
  start's *overlap policy* the new run is skipped while an earlier one is going
  (``skip``), queued behind it (``queue``) or started after cancelling it
  (``cancel_previous``);
* :func:`take_turn`, the safety net whichever way a run was started: a run's producer
  takes the target's *turn* before it plans, and waits (sending its task again) while the
  run holding the turn is not done.

The target is what dbt writes to (:func:`dbt_celery.dbt.target.target_identity`), not how
the profile was spelled; both guards key their records on it (:func:`target_key`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from typing import Any, Callable, Mapping

from dbt_celery.core.kv import compare_and_set
from dbt_celery.core.spec import RunSpec
from dbt_celery.core.store import StatusStore, decode_payload, encode_payload
from dbt_celery.errors import ConfigurationError

#: What a start does when a run of the same target is still going.
OVERLAP_POLICIES = ("skip", "queue", "cancel_previous")
#: A schedule that overruns should not pile up runs: a tick during a run is skipped.
DEFAULT_OVERLAP = "skip"


def target_key(identity: Mapping[str, Any]) -> str:
    """A short stable key for a target identity."""
    return hashlib.sha1(json.dumps(dict(identity), sort_keys=True).encode()).hexdigest()[:16]


def location_key(spec: RunSpec) -> str:
    """A key for where a spec says its target is, for a worker that cannot read the project's profile.

    Weaker than the target's identity (two spellings of one target get two keys), but the
    same spec, a schedule entry's next tick, always gets the same key.
    """
    return target_key({"location": [spec.project_dir, spec.profiles_dir, spec.target, dict(spec.profile or {})]})


def check_policy(policy: object) -> str:
    """Return ``policy`` if it is one of :data:`OVERLAP_POLICIES`, else raise ConfigurationError."""
    if policy not in OVERLAP_POLICIES:
        raise ConfigurationError(f"overlap must be one of {', '.join(OVERLAP_POLICIES)}, not {policy!r}")
    return str(policy)


@dataclasses.dataclass(frozen=True)
class Admission:
    """What became of one start: the run started (``run_id``) or was skipped, and why."""

    run_id: str | None
    reason: str | None = None
    cancelled: tuple[str, ...] = ()

    @property
    def skipped(self) -> bool:
        """True when no run was started."""
        return self.run_id is None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, as ``dbt_celery.start_run`` returns it."""
        return {
            "run_id": self.run_id,
            "skipped": self.skipped,
            "reason": self.reason,
            "cancelled": list(self.cancelled),
        }


def admit(store: StatusStore, key: str, run_id: str, policy: str, is_done: Callable[[str], bool]) -> Admission:
    """Decide by ``policy`` whether ``run_id`` starts on target ``key``; if it does, record it as the latest.

    Going runs are the target's latest admitted run (a run still queued counts) and the run
    holding the target's turn (so runs submitted without a start count too), unless done.
    The caller sends the run only when the admission has a ``run_id``.
    """
    check_policy(policy)
    latest_key = store.key(_scope(key), "latest")
    cancelled: dict[str, None] = {}
    while True:  # another lap only after another start of this target won the compare-and-set
        (raw,) = store.kv.get_many([latest_key])
        going = _going(store, key, raw, is_done)
        if going and policy == "skip":
            return Admission(None, f"run {going[0]} of the same target is still running")
        if policy == "cancel_previous":
            reason = f"cancelled by run {run_id} of the same target (overlap policy cancel_previous)"
            cancelled |= {other: None for other in going if store.cancel(other, reason)}
        if compare_and_set(store.kv, latest_key, raw, encode_payload({"run_id": run_id, "at": time.time()})):
            return Admission(run_id, _started_reason(policy, going), tuple(cancelled))


def _going(store: StatusStore, key: str, latest_raw: bytes | None, is_done: Callable[[str], bool]) -> list[str]:
    (active,) = store.documents(_scope(key), ["active"])
    latest = decode_payload(latest_raw)["run_id"] if latest_raw is not None else None
    candidates = dict.fromkeys(run for run in (active["run_id"] if active else None, latest) if run)
    return [run for run in candidates if not is_done(run)]


def _started_reason(policy: str, going: list[str]) -> str | None:
    if not going:
        return None
    runs = ", ".join(going)
    return f"cancelled run {runs} of the same target" if policy == "cancel_previous" else f"queued behind run {runs}"


def take_turn(store: StatusStore, run_id: str, key: str, is_done: Callable[[str], bool]) -> str | None:
    """Take the target's turn for ``run_id``; return None when taken, else the run still building."""
    scope = _scope(key)
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


def _scope(key: str) -> str:
    return f"target-{key}"
