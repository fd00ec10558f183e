"""What a start does while a run of the same target is going (skip, queue, cancel_previous), on the in-memory store."""

from __future__ import annotations

import inspect
import threading

import pytest

from dbt_celery.core.kv import MemoryKV
from dbt_celery.core.overlap import DEFAULT_OVERLAP, admit, check_policy, location_key, take_turn, target_key
from dbt_celery.core.spec import RunSpec
from dbt_celery.core.store import StatusStore
from dbt_celery.errors import ConfigurationError

TARGET = target_key({"type": "postgres", "host": "db", "database": "shop", "schema": "marts"})
OTHER_TARGET = target_key({"type": "postgres", "host": "db", "database": "shop", "schema": "staging"})


@pytest.fixture
def store() -> StatusStore:
    return StatusStore(MemoryKV())


def test_skip_leaves_out_a_tick_while_the_previous_run_is_going(store):
    done: set[str] = set()
    first = admit(store, TARGET, "run-1", "skip", done.__contains__)
    assert first.to_dict() == {"run_id": "run-1", "skipped": False, "reason": None, "cancelled": []}

    second = admit(store, TARGET, "run-2", "skip", done.__contains__)
    assert second.to_dict() == {
        "run_id": None,
        "skipped": True,
        "reason": "run run-1 of the same target is still running",
        "cancelled": [],
    }

    done.add("run-1")
    assert admit(store, TARGET, "run-3", "skip", done.__contains__).run_id == "run-3"
    assert admit(store, TARGET, "run-4", "skip", done.__contains__).skipped  # run-3 is the one going now


def test_skip_counts_a_run_started_without_a_start_once_it_holds_the_turn(store):
    # A run from submit() or the CLI: its producer took the target's turn and builds.
    assert take_turn(store, "by-hand", TARGET, lambda run: False) is None
    tick = admit(store, TARGET, "tick", "skip", lambda run: False)
    assert tick.skipped and tick.reason == "run by-hand of the same target is still running"


def test_other_targets_do_not_hold_a_start_back(store):
    assert admit(store, TARGET, "run-1", "skip", lambda run: False).run_id == "run-1"
    assert admit(store, OTHER_TARGET, "run-2", "skip", lambda run: False).run_id == "run-2"


def test_queue_starts_the_run_behind_the_going_one_and_the_turn_keeps_them_apart(store):
    done: set[str] = set()
    assert admit(store, TARGET, "run-1", "queue", done.__contains__).run_id == "run-1"
    assert take_turn(store, "run-1", TARGET, done.__contains__) is None

    second = admit(store, TARGET, "run-2", "queue", done.__contains__)
    assert second.to_dict() == {
        "run_id": "run-2",
        "skipped": False,
        "reason": "queued behind run run-1",
        "cancelled": [],
    }
    assert store.cancelled("run-1") is None
    # The producer-side turn is the safety net: run-2 builds only once run-1 is done.
    assert take_turn(store, "run-2", TARGET, done.__contains__) == "run-1"
    done.add("run-1")
    assert take_turn(store, "run-2", TARGET, done.__contains__) is None


def test_queue_then_skip_a_tick_still_waiting_for_its_turn(store):
    # run-2 was queued behind run-1; a skip tick sees both going and names the one building.
    assert take_turn(store, "run-1", TARGET, lambda run: False) is None
    admit(store, TARGET, "run-2", "queue", lambda run: False)
    tick = admit(store, TARGET, "run-3", "skip", lambda run: False)
    assert tick.skipped and tick.reason == "run run-1 of the same target is still running"
    # Once run-1 is done, the queued run-2 (not yet building) still holds the next tick back.
    tick = admit(store, TARGET, "run-4", "skip", {"run-1"}.__contains__)
    assert tick.skipped and tick.reason == "run run-2 of the same target is still running"


def test_cancel_previous_cancels_the_going_run_through_the_store_and_starts(store):
    assert admit(store, TARGET, "run-1", "cancel_previous", lambda run: False).run_id == "run-1"
    second = admit(store, TARGET, "run-2", "cancel_previous", lambda run: False)
    assert second.to_dict() == {
        "run_id": "run-2",
        "skipped": False,
        "reason": "cancelled run run-1 of the same target",
        "cancelled": ["run-1"],
    }
    assert store.cancelled("run-1") == "cancelled by run run-2 of the same target (overlap policy cancel_previous)"
    assert store.cancelled("run-2") is None


def test_cancel_previous_with_nothing_going_cancels_nothing(store):
    admit(store, TARGET, "run-1", "skip", lambda run: False)
    second = admit(store, TARGET, "run-2", "cancel_previous", lambda run: True)
    assert second.run_id == "run-2" and second.cancelled == () and second.reason is None
    assert store.cancelled("run-1") is None


def test_simultaneous_skip_starts_admit_exactly_one(store):
    barrier = threading.Barrier(8)
    admitted: list[str | None] = []

    def start(n: int) -> None:
        barrier.wait()
        admitted.append(admit(store, TARGET, f"run-{n}", "skip", lambda run: False).run_id)

    threads = [threading.Thread(target=start, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    started = [run for run in admitted if run is not None]
    assert len(admitted) == 8 and len(started) == 1


@pytest.mark.parametrize("policy", ["", "Skip", "wait", None, 1])
def test_unknown_policies_are_refused(store, policy):
    with pytest.raises(ConfigurationError, match="overlap must be one of skip, queue, cancel_previous"):
        admit(store, TARGET, "run-1", policy, lambda run: False)
    with pytest.raises(ConfigurationError):
        check_policy(policy)


def test_start_run_skips_by_default():
    from dbt_celery.celery.tasks import start_run

    assert DEFAULT_OVERLAP == "skip"
    assert inspect.signature(start_run.run).parameters["overlap"].default == DEFAULT_OVERLAP


def test_the_spec_location_key_is_stable_per_spec():
    spec = RunSpec(project_dir="/srv/shop", profiles_dir="/srv/profiles", target="prod")
    assert location_key(spec) == location_key(RunSpec.from_dict(spec.to_dict()))
    assert location_key(spec) != location_key(RunSpec(project_dir="/srv/shop", profiles_dir="/srv/profiles"))
