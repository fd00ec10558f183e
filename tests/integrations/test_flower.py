"""What a real Flower process shows of dbt-celery runs (issues 11.4 and 13.2).

One Flower (``celery -A dbt_celery flower``) attaches to the session's workers before
anything is sent; then one passing run of the example (DuckDB) and one failing run of the
watcher project go through them, and every check reads Flower's HTTP API, as a user's
dashboard or script would: ``/api/tasks``, ``/api/task/info/<id>``, ``/api/task/result/<id>``
and the worker counters behind its Workers page. The producers are looked at while they
build, since Flower only keeps a task's latest state.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import threading
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dbt_celery.core.plan import consumer_task_id, producer_task_id
from dbt_celery.core.records import PASSING_STATES
from dbt_celery.core.summary import RunStatus
from dbt_celery.run import DbtRun, submit
from tests.e2e.test_watcher import watcher_spec
from tests.flower_process import Flower
from tests.helpers import JAFFLE_SHOP, REPO, copy_project

#: Seconds a run may take on a busy machine (the example has 27 nodes).
RUN_TIMEOUT = 240.0
#: Seconds Flower may lag behind the result backend once a run is over.
SETTLE_TIMEOUT = 60.0
#: Seconds between two looks at the producers while they build.
LOOK_EVERY = 0.2
FINAL_STATES = {"SUCCESS", "FAILURE"}


@dataclass
class Observed:
    """A finished run, its project's name, and what Flower showed of its producer while it went on."""

    run: DbtRun
    project: str
    status: RunStatus
    producer_views: list[dict[str, Any]]

    @property
    def producer_id(self) -> str:
        return producer_task_id(self.run.id)

    def consumer_ids(self) -> dict[str, str]:
        """Each node's consumer task id."""
        return {consumer_task_id(self.run.id, uid): uid for uid in self.status.nodes}

    def tasks_of_run(self, tasks: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The tasks in Flower's list whose arguments name this run."""
        return {tid: task for tid, task in tasks.items() if f"'run_id': '{self.run.id}'" in (task.get("kwargs") or "")}


class ProducerLooker(threading.Thread):
    """Flower's view of runs' producer tasks, taken every LOOK_EVERY seconds until stopped (changes only)."""

    def __init__(self, flower: Flower, views: dict[str, list[dict[str, Any]]]) -> None:
        super().__init__(daemon=True)
        self.flower, self.views = flower, views  # run id: the views of its producer so far
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for run_id, seen in self.views.items():
                view = self._look(producer_task_id(run_id))
                if not seen or seen[-1] != view:
                    seen.append(view)
            time.sleep(LOOK_EVERY)

    def _look(self, task_id: str) -> dict[str, Any]:
        view: dict[str, Any] = {"info": None, "backend": None}
        try:
            view["info"] = self.flower.task(task_id)
        except urllib.error.HTTPError as exc:  # 404: Flower has heard nothing of it yet
            view["info"] = {"http": exc.code}
        except OSError as exc:
            view["info"] = {"error": repr(exc)}
        try:
            view["backend"] = self.flower.get(f"/api/task/result/{task_id}")
        except OSError as exc:
            view["backend"] = {"error": repr(exc)}
        return view


@pytest.fixture(scope="module")
def flower(redis_workers, redis_url, worker_env, tmp_path_factory) -> Iterator[Flower]:
    """One real Flower on the suite's Redis, having heard every session worker before anything is sent."""
    names = [redis_workers.node_name(role) for role in redis_workers.roles]
    with Flower(redis_url, tmp_path_factory.mktemp("flower"), worker_env, names) as process:
        yield process


@pytest.fixture(scope="module")
def runs(flower, redis_app, tmp_path_factory) -> dict[str, Observed]:
    """A passing run of the example and a failing one of the watcher project, watched by Flower."""
    root = tmp_path_factory.mktemp("flower-runs")
    specs = {
        "passing": watcher_spec(copy_project(JAFFLE_SHOP, root), root / "jaffle.duckdb"),
        # `broken` fails (one genuine retry, then for good); `broken_child` is never built.
        "failing": watcher_spec(
            copy_project("watcher", root),
            root / "w.duckdb",
            vars={"fail_broken": True},
            exclude=("flaky", "flaky_child"),
        ),
    }
    handles = {kind: submit(spec, app=redis_app) for kind, spec in specs.items()}
    views: dict[str, list[dict[str, Any]]] = {handle.id: [] for handle in handles.values()}
    looker = ProducerLooker(flower, views)
    looker.start()
    try:
        statuses = {kind: handle.wait(RUN_TIMEOUT) for kind, handle in handles.items()}
    finally:
        looker.stopping.set()
        looker.join(10)
    observed = {
        kind: Observed(handles[kind], Path(spec.project_dir).name, statuses[kind], views[handles[kind].id])
        for kind, spec in specs.items()
    }
    assert observed["passing"].status.state == "success", observed["passing"].status.to_dict()
    assert observed["failing"].status.state == "failed", observed["failing"].status.to_dict()
    flower.wait_for(
        lambda: _settled(flower, list(observed.values())), SETTLE_TIMEOUT, "Flower did not show every task's end"
    )
    return observed


def _settled(flower: Flower, observed: list[Observed]) -> bool | None:
    """Whether Flower shows every consumer and producer of these runs in a final state."""
    tasks = flower.tasks()
    wanted = [tid for item in observed for tid in [*item.consumer_ids(), item.producer_id]]
    return True if all(tasks.get(tid, {}).get("state") in FINAL_STATES for tid in wanted) else None


def _result(task: dict[str, Any]) -> dict[str, Any]:
    """A task's result as Flower shows it (the repr of the returned dict), read back."""
    value = ast.literal_eval(task["result"])
    assert isinstance(value, dict), task["result"]
    return value


def test_flower_lists_one_task_per_dbt_node_under_the_node_s_name(runs, flower):
    tasks = flower.tasks()
    for kind, item in runs.items():
        of_run = item.tasks_of_run(tasks)
        consumers = {tid: task for tid, task in of_run.items() if "'unique_id': " in task["kwargs"]}
        # Waiting consumers send themselves again under the same id: still one task per node.
        assert set(consumers) == set(item.consumer_ids()), kind
        for tid, uid in item.consumer_ids().items():
            node = item.status.nodes[uid]
            assert consumers[tid]["name"] == f"dbt {node.resource_type} {node.name}", (kind, uid)
            assert f"'unique_id': '{uid}'" in consumers[tid]["kwargs"]
        others = {task["name"] for tid, task in of_run.items() if tid not in consumers}
        assert of_run[item.producer_id]["name"] == f"dbt build {item.project}"
        assert others <= {f"dbt build {item.project}", f"dbt watch {item.project}"}, others
    assert len(runs["passing"].status.nodes) == 27


def test_every_consumer_of_a_passing_run_succeeds_with_its_node_s_outcome_and_no_retry(runs, flower):
    item = runs["passing"]
    for tid, uid in item.consumer_ids().items():
        task, node = flower.task(tid), item.status.nodes[uid]
        assert task["state"] == "SUCCESS", (uid, task)
        assert task["exception"] is None and task["traceback"] is None, (uid, task)
        assert task["retries"] == 0 and task["retried"] is None, (uid, task)
        result = _result(task)
        assert result["state"] == "success" and result["dbt_status"] == node.dbt_status, (uid, result)
        assert result["execution_time"] == node.execution_time and result["execution_time"] > 0
        assert "rows_affected" in result and result["rows_affected"] == node.rows_affected
        assert result["started_at"] == node.started_at and result["finished_at"] == node.finished_at
    seed = flower.task(consumer_task_id(item.run.id, "seed.jaffle_shop.raw_orders"))
    assert _result(seed)["rows_affected"] == 200  # the seed's rows, as dbt counted them


def test_the_producer_shows_progress_while_it_builds_then_its_end(runs, flower):
    for kind, item in runs.items():
        total = len(item.status.nodes)
        shown = [view["info"].get("state") for view in item.producer_views]
        assert "PROGRESS" in shown, (kind, item.producer_views)
        # Flower's result endpoint reads the result backend: PROGRESS there too (done/total stay in
        # the backend; Flower's task views keep only Celery's standard fields).
        assert "PROGRESS" in [view["backend"].get("state") for view in item.producer_views], kind
        final = flower.task(item.producer_id)
        if kind == "passing":
            assert final["state"] == "SUCCESS" and final["exception"] is None, final
            summary = _result(final)
            assert summary["dbt_success"] is True and summary["nodes"] == summary["reported"] == total
        else:
            assert final["state"] == "FAILURE", final
            assert final["exception"].startswith("BuildFailed('dbt build finished with failed nodes")
            assert f"({total} of {total} reported)" in final["exception"] and final["traceback"]
    counters = _worker_counters(flower)
    assert any(count.get("task-progress", 0) >= len(runs) for count in counters.values()), counters


def test_flower_names_the_producer_while_it_builds(runs):
    for kind, item in runs.items():
        building = [view["info"] for view in item.producer_views if view["info"].get("state") == "PROGRESS"]
        assert building and all(info["name"] == f"dbt build {item.project}" for info in building), (kind, building)
        # done/total, in the one field Flower shows for a task that has not ended
        assert all(re.fullmatch(r"\d+/\d+ nodes", str(info.get("result"))) for info in building), (kind, building)


def test_every_node_that_did_not_pass_is_one_failed_task_in_flower(runs, flower):
    item = runs["failing"]
    not_passing = {uid for uid, node in item.status.nodes.items() if node.status not in PASSING_STATES}
    assert not_passing == {"model.watcher.broken", "model.watcher.broken_child"}
    tasks = flower.tasks()
    failed = {uid for tid, uid in item.consumer_ids().items() if tasks[tid]["state"] == "FAILURE"}
    assert failed == not_passing and len(failed) == len(not_passing)
    for tid, uid in item.consumer_ids().items():
        task = flower.task(tid)
        if uid in not_passing:
            assert uid in task["exception"] and task["traceback"], (uid, task)
        else:
            assert task["state"] == "SUCCESS" and task["exception"] is None and task["retried"] is None, (uid, task)
    broken = flower.task(consumer_task_id(item.run.id, "model.watcher.broken"))
    assert broken["exception"].startswith("NodeFailed(") and "broken on purpose" in broken["exception"]
    assert broken["retried"] is not None  # its one genuine retry (retries=1 by default) shows
    child = flower.task(consumer_task_id(item.run.id, "model.watcher.broken_child"))
    assert child["exception"].startswith("UpstreamFailed(") and "model.watcher.broken " in child["exception"]
    assert child["retried"] is None and child["retries"] == 0


def test_flower_counts_the_genuine_retry_of_a_failed_node(runs, flower):
    broken = flower.task(consumer_task_id(runs["failing"].run.id, "model.watcher.broken"))
    assert broken["retries"] == 1, broken


def test_flower_counts_the_run_level_events_on_a_worker(runs, flower):
    counters = _worker_counters(flower)
    assert sum(count.get("dbt-run-started", 0) for count in counters.values()) >= len(runs), counters


def _worker_counters(flower: Flower) -> dict[str, dict[str, int]]:
    """The event counts per worker behind Flower's Workers page (``/workers?json=1``)."""
    rows = flower.get("/workers", json="1")["data"]
    return {row["hostname"]: {k: v for k, v in row.items() if re.fullmatch(r"[a-z]+(-[a-z]+)+", k)} for row in rows}


def test_the_screenshot_script_imports_without_starting_anything():
    spec = importlib.util.spec_from_file_location("screenshots", REPO / "docs" / "screenshots.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.main)
    assert module.CHROMIUM_ARGS[:2] == ["--headless", "--no-sandbox"]
