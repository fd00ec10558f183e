"""The run's combined run_results.json: which invocation's result each node carries (no dbt process)."""

from __future__ import annotations

import json

from dbt_celery.core.artifacts import RunArtifacts, combine, not_run_result
from dbt_celery.core.kv import MemoryKV
from dbt_celery.core.store import PRODUCER_LEASE, StatusStore


def result(uid: str, status: str, thread: str = "Thread-1") -> dict:
    return {**not_run_result(uid, ""), "status": status, "thread_id": thread, "message": None}


def build(*results: dict, which: str = "build") -> dict:
    return {
        "metadata": {"invocation_id": which},
        "results": list(results),
        "elapsed_time": 1.0,
        "args": {"which": which},
    }


def test_a_rebuild_wins_over_the_builds_and_a_later_generation_over_an_earlier_one():
    first = build(result("model.p.a", "success"), result("model.p.b", "error"), result("model.p.c", "skipped"))
    resumed = build(result("model.p.c", "success", "Thread-2"), which="resumed")
    rebuilt = {"model.p.b": result("model.p.b", "success", "fallback")}
    combined = combine([first, None, resumed], rebuilt, {"model.p.a": "x", "model.p.b": "x", "model.p.c": "x"})
    statuses = {r["unique_id"]: (r["status"], r["thread_id"]) for r in combined["results"]}
    assert statuses == {
        "model.p.a": ("success", "Thread-1"),
        "model.p.b": ("success", "fallback"),
        "model.p.c": ("success", "Thread-2"),
    }
    assert combined["args"] == {"which": "build"} and combined["metadata"] == {"invocation_id": "build"}


def test_planned_nodes_nothing_ran_are_skipped_with_the_reason_and_retryable():
    combined = combine([build(result("model.p.a", "success"))], {}, {"model.p.a": "x", "model.p.d": "cancelled"})
    artifacts = RunArtifacts("r", combined, None)
    assert artifacts.results()["model.p.d"]["status"] == "skipped"
    assert artifacts.results()["model.p.d"]["message"] == "cancelled"
    assert artifacts.retryable() == ["model.p.d"]


def test_a_run_whose_build_wrote_nothing_still_gets_a_document():
    combined = combine([None], {}, {"seed.p.s": "the producer died"})
    assert combined["args"]["which"] == "build" and [r["unique_id"] for r in combined["results"]] == ["seed.p.s"]


def test_write_puts_both_files_in_the_folder(tmp_path):
    written = RunArtifacts("r", build(), {"nodes": {}}).write(tmp_path / "out")
    assert [path.name for path in written] == ["run_results.json", "manifest.json"]
    assert json.loads(written[1].read_text()) == {"nodes": {}}


def test_build_artifacts_are_fenced_and_read_back_with_rebuilds():
    store = StatusStore(MemoryKV())
    held = store.acquire("r", PRODUCER_LEASE, "me", 60)
    assert held is not None
    assert store.put_build_artifacts("r", held, build(result("model.p.a", "error")), {"nodes": {"model.p.a": {}}})
    store.put_events("r", [], None, {"model.p.a": result("model.p.a", "success", "fallback")})
    builds, rebuilt, manifest = store.build_artifacts("r", 3, ["model.p.a", "model.p.b"])
    assert builds[0]["results"][0]["status"] == "error" and builds[1:] == [None, None]
    assert rebuilt == {"model.p.a": result("model.p.a", "success", "fallback")}
    assert manifest == {"nodes": {"model.p.a": {}}}
    taken = store.acquire("r", PRODUCER_LEASE, "other", 60, now=10**12)
    assert taken is not None
    assert not store.put_build_artifacts("r", held, build(), None)  # the old holder writes nothing more
