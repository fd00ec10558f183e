"""One measurement each: plain ``dbt build`` (the baseline), a dbt-celery run, the naive chain.

Every function takes a generated project and a fresh DuckDB path and returns a plain
dict of numbers, so the results can be dumped to JSON and rendered by the report.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis
from celery import Celery, chain

from benchmarks.events import EventLog
from benchmarks.generate import Node, Project
from benchmarks.naive import NAIVE_QUEUE, NAIVE_TASK
from benchmarks.workers import Workers, process_peak_rss_bytes, process_rss_bytes, reset_peak_rss
from dbt_celery.celery.backends import store_for
from dbt_celery.core.plan import consumer_task_id, load_nodes
from dbt_celery.core.records import NodeOutcome, NodeState, ProducerPhase, ProducerState, epoch_seconds
from dbt_celery.core.spec import RunSpec
from dbt_celery.core.store import StatusStore
from dbt_celery.run import submit

#: Seconds between the run handle's status reads while waiting (DbtRun.wait's default).
WAIT_INTERVAL = 0.25
#: Seconds a single measured run may take before the benchmark gives up.
RUN_TIMEOUT = 1800.0
#: Seconds to let the workers' last task events arrive before a run's executions are counted.
EVENT_GRACE = 0.5


def dbt_env() -> dict[str, str]:
    """Environment both approaches run dbt with (no usage tracking, no version check)."""
    return {"DO_NOT_TRACK": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DBT_VERSION_CHECK": "false"}


def fresh_db(path: Path) -> Path:
    """Remove a DuckDB file and its WAL so the next build starts from an empty database."""
    for candidate in (path, path.with_name(path.name + ".wal")):
        candidate.unlink(missing_ok=True)
    return path


# -- baseline: plain dbt build ----------------------------------------------------------------
def dbt_cli(project: Project, args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the dbt CLI on a project (untimed helper: warm-ups, parse)."""
    command = [_dbt(), *args, "--project-dir", str(project.path), "--profiles-dir", str(project.path)]
    return subprocess.run(command, cwd=project.path, env={**os.environ, **dbt_env()}, capture_output=True, text=True)


def measure_cli(project: Project, db: Path, threads: int) -> dict[str, Any]:
    """Wall time, CPU and peak memory of a plain ``dbt build`` CLI process on a fresh database."""
    project.write_profile(fresh_db(db), threads)
    command = [
        _dbt(),
        "build",
        "--threads",
        str(threads),
        "--project-dir",
        str(project.path),
        "--profiles-dir",
        str(project.path),
    ]
    epoch = time.time()
    done = run_timed(command, project.path, {**os.environ, **dbt_env()})
    if done.returncode != 0:
        raise RuntimeError(f"plain dbt build failed ({done.returncode}):\n{done.output[-3000:]}")
    span = _results_span(project.path / "target" / "run_results.json")
    return {
        "wall": done.wall,
        "cpu": done.cpu,
        "peak_rss": done.peak_rss,
        "nodes_span": span["span"],
        "nodes": span["count"],
        "before_first_node": span["first_start"] - epoch if span["first_start"] else None,
    }


@dataclasses.dataclass(frozen=True)
class Timed:
    """A finished child process: exit code, output, wall seconds, its own CPU seconds and peak RSS."""

    returncode: int
    output: str  # stdout and stderr, or stdout alone where stderr was kept apart
    errors: str  # stderr, where it was kept apart
    wall: float
    cpu: float
    peak_rss: int
    started_at: float  # epoch
    ended_at: float


def run_timed(
    command: list[str], cwd: Path, env: dict[str, str], timeout: float = RUN_TIMEOUT, split_stderr: bool = False
) -> Timed:
    """Run one command to its end (killed after ``timeout``); CPU and peak RSS come from ``wait4`` on that child.

    They cover the child and the descendants it waited for (``dbt-celery run`` reaps its workers).
    """
    with tempfile.TemporaryFile() as output, tempfile.TemporaryFile() as errors:
        started_at = time.time()
        started = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=output, stderr=errors if split_stderr else subprocess.STDOUT
        )
        killer = threading.Timer(timeout, process.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        output.seek(0)
        errors.seek(0)
        text, error_text = output.read().decode(errors="replace"), errors.read().decode(errors="replace")
    return Timed(
        returncode=process.returncode,
        output=text,
        errors=error_text,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        peak_rss=usage.ru_maxrss * 1024,
        started_at=started_at,
        ended_at=started_at + wall,
    )


# -- dbt-celery -------------------------------------------------------------------------------
class ReadCounter:
    """Counts the status-store reads (MGETs) this (observer) process makes, to tell them from the consumers'."""

    def __init__(self, app: Celery) -> None:
        self.calls = 0
        client = store_for(app).kv.client  # type: ignore[attr-defined]  # the RedisKV's client
        original = client.mget

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*args, **kwargs)

        client.mget = counted  # instance attribute: only this process's reads are counted


def measure_celery(
    app: Celery,
    workers: Workers,
    client: redis.Redis,
    counter: ReadCounter,
    project: Project,
    db: Path,
    threads: int,
    workspaces: Path,
    events: EventLog,
) -> dict[str, Any]:
    """Wall time of one dbt-celery run, from submit() to wait() returning, with what it cost."""
    project.write_profile(fresh_db(db), threads)
    spec = RunSpec(project_dir=str(project.path), profiles_dir=str(project.path), threads=threads)
    peak_reset = all([reset_peak_rss(workers.pid(role)) for role in workers.processes])
    commands_before = command_stats(client)
    cpu_before = workers.cpu_seconds()
    own_before = _own_cpu()
    reads_before = counter.calls
    submitted = time.time()
    started = time.perf_counter()
    run = submit(spec, app=app)
    status = run.wait(RUN_TIMEOUT, interval=WAIT_INTERVAL)
    wall = time.perf_counter() - started
    returned = submitted + wall
    observer_reads = counter.calls - reads_before
    own_cpu = _own_cpu() - own_before
    cpu_after = workers.cpu_seconds()
    commands_after = command_stats(client)
    if status.state != "success":
        failed = {uid: node.message for uid, node in status.nodes.items() if node.status is not NodeState.SUCCESS}
        raise RuntimeError(f"dbt-celery run {run.id} ended {status.state}: {status.error} {list(failed.items())[:5]}")

    store = store_for(app)
    outcomes = store.outcomes(run.id, status.nodes)
    producer = store.producer(run.id)
    assert producer is not None and producer.started_at is not None and producer.finished_at is not None
    check_own_producer(producer, workers)
    lags = [lag for outcome in outcomes.values() if (lag := wake_up_lag(outcome)) is not None]
    counted = [1 + o.polls + o.retries for o in outcomes.values()]
    time.sleep(EVENT_GRACE)  # the last consumers' events are on their way
    executions = events.measure([consumer_task_id(run.id, uid) for uid in status.nodes], submitted, returned)
    if executions["executions_min"] < 1:
        raise RuntimeError(f"run {run.id}: a consumer executed without a task-started event (is the receiver lossy?)")
    starts = [when(o.started_at) for o in outcomes.values() if o.started_at]
    finishes = [when(o.finished_at) for o in outcomes.values() if o.finished_at]
    last_consumer = max(o.recorded_at for o in outcomes.values() if o.recorded_at is not None)
    workspace = producer_results(workspaces, run.id)
    nodes = len(status.nodes)
    deltas = {name: commands_after.get(name, 0) - commands_before.get(name, 0) for name in set(commands_after)}
    bytes_in, bytes_out = deltas.pop("@bytes_in"), deltas.pop("@bytes_out")
    return {
        "run_id": run.id,
        "wall": wall,
        "wall_last_consumer": last_consumer - submitted,
        "nodes": nodes,
        "tail_lag": last_consumer - max(finishes),
        "phases": {
            "queue": producer.started_at - submitted,
            "plan_and_start": min(starts) - producer.started_at,
            "nodes_span": max(finishes) - min(starts),
            "producer_finish": producer.finished_at - max(finishes),
            "tail": last_consumer - producer.finished_at,
            "observer": returned - last_consumer,
        },
        "dbt_nodes_span": _results_span(workspace)["span"] if workspace.is_file() else None,
        "lags": lags,
        "executions": executions,
        "outcome_executions_per_node": statistics.fmean(counted),
        "fallbacks": sum(1 for o in outcomes.values() if o.resolved_by == "fallback"),
        "redis": {
            "per_node": {name: count / nodes for name, count in sorted(deltas.items()) if count > 0},
            "total_per_node": sum(deltas.values()) / nodes,
            "kb_in_per_node": bytes_in / nodes / 1024,
            "kb_out_per_node": bytes_out / nodes / 1024,
            "observer_mget": observer_reads,
            "worker_reads_per_node": (deltas.get("mget", 0) + deltas.get("get", 0) - observer_reads) / nodes,
        },
        "cpu": {
            "producer": cpu_after["producer"] - cpu_before["producer"],
            "consumer": cpu_after["consumer"] - cpu_before["consumer"],
            "observer": own_cpu,
        },
        "consumer_rss": process_rss_bytes(workers.pid("consumer")),
        "producer_rss": process_rss_bytes(workers.pid("producer")),
        "consumer_peak_rss": process_peak_rss_bytes(workers.pid("consumer")),
        "producer_peak_rss": process_peak_rss_bytes(workers.pid("producer")),
        "peak_rss_of_this_run": peak_reset,
        "plan": plan_stats(store, run.id, list(status.nodes)),
    }


def producer_results(workspaces: Path, run_id: str, generation: int = 1) -> Path:
    """The run_results.json of one producer generation's ``dbt build`` (its workspace ``producer-<n>``)."""
    return workspaces / run_id / f"producer-{generation}" / "target" / "run_results.json"


def producer_pid(producer: ProducerState) -> int | None:
    """The process id in a producer's lease holder name (``host:pid:nonce``)."""
    parts = (producer.worker or "").rsplit(":", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def check_own_producer(producer: ProducerState, workers: Workers) -> None:
    """Fail loudly if a worker other than ours ran the producer (someone else reads this Redis DB)."""
    if producer_pid(producer) != workers.pid("producer"):
        raise RuntimeError(
            f"the producer ran in {producer.worker}, not in this harness's worker (pid {workers.pid('producer')}): "
            "another process reads this Redis DB; rerun with a free --redis-db"
        )


def plan_stats(store: StatusStore, run_id: str, unique_ids: list[str]) -> dict[str, float]:
    """Edges in a run's plan, and the outcome keys a passing consumer reads to release its children."""
    nodes = load_nodes(store, run_id, unique_ids)
    edges = sum(len(node.parents) for node in nodes.values())
    release_keys = sum(
        len(nodes[child].parents) for node in nodes.values() for child in node.children if child in nodes
    )
    return {
        "edges": edges,
        "max_parents": max((len(node.parents) for node in nodes.values()), default=0),
        "release_keys_per_node": release_keys / max(1, len(nodes)),
    }


def measure_producer_alone(
    app: Celery, workers: Workers, project: Project, db: Path, threads: int, workspaces: Path
) -> dict[str, Any]:
    """Diagnostic: a dbt-celery run with the consumer worker frozen until the producer is done.

    Shows what the producer costs on its own (no consumer competing for the CPUs);
    the run then finishes normally so nothing is left behind.
    """
    project.write_profile(fresh_db(db), threads)
    spec = RunSpec(project_dir=str(project.path), profiles_dir=str(project.path), threads=threads)
    store = store_for(app)
    deadline = time.monotonic() + RUN_TIMEOUT
    with workers.paused("consumer"):
        submitted = time.time()
        run = submit(spec, app=app)
        while True:
            producer = store.producer(run.id)
            if producer is not None and producer.ended:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"producer of run {run.id} did not finish within {RUN_TIMEOUT} s")
            time.sleep(0.05)
    status = run.wait(RUN_TIMEOUT)
    check_own_producer(producer, workers)
    if status.state != "success" or producer.phase is not ProducerPhase.FINISHED:
        raise RuntimeError(f"diagnostic run {run.id} ended {status.state}: {status.error}")
    assert producer.started_at is not None and producer.finished_at is not None
    span = _results_span(producer_results(workspaces, run.id))
    return {
        "to_producer_finished": producer.finished_at - submitted,
        "producer_total": producer.finished_at - producer.started_at,
        "dbt_nodes_span": span["span"],
        "plan_and_start": span["first_start"] - producer.started_at,
    }


def wake_up_lag(outcome: NodeOutcome) -> float | None:
    """Seconds from dbt finishing a node to its consumer recording the outcome (None if either is unknown)."""
    if not outcome.finished_at or outcome.recorded_at is None:
        return None
    return outcome.recorded_at - when(outcome.finished_at)


def command_stats(client: redis.Redis) -> dict[str, int]:
    """Calls per Redis command so far, and bytes in and out (server-wide, all databases)."""
    calls = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in client.info("commandstats").items()}
    stats = client.info("stats")
    return {
        **calls,
        "@bytes_in": int(stats["total_net_input_bytes"]),
        "@bytes_out": int(stats["total_net_output_bytes"]),
    }


def idle_command_rate(client: redis.Redis, seconds: float = 2.0) -> float:
    """Redis commands per second while nothing runs (worker heartbeats, blocking pops, other tenants)."""

    def total() -> int:
        return sum(value for name, value in command_stats(client).items() if not name.startswith("@"))

    before = total()
    time.sleep(seconds)
    return (total() - before - 3) / seconds


# -- naive: one new dbt process per node, chained on the same worker -------------------------
def measure_naive(app: Celery, project: Project, nodes: list[Node], threads: int, target: Path) -> dict[str, Any]:
    """Time a chain of ``naive_build`` tasks, one per node, in topological order.

    The database must already hold every parent of ``nodes`` (a sample runs on the
    database a complete dbt-celery run just built; the full chain on a fresh one).
    """
    target.mkdir(parents=True, exist_ok=True)
    task = app.tasks[NAIVE_TASK]
    signatures = [task.si(str(project.path), node.name, threads, str(target)).set(queue=NAIVE_QUEUE) for node in nodes]
    started = time.perf_counter()
    result = chain(*signatures).apply_async()
    result.get(timeout=RUN_TIMEOUT * 4, propagate=True, interval=0.1)
    wall = time.perf_counter() - started
    processes = []
    node_result = result
    while node_result is not None:
        processes.append(node_result.result["seconds"])
        node_result = node_result.parent
    return {
        "nodes_timed": len(nodes),
        "wall": wall,
        "per_node": wall / len(nodes),
        "dbt_process_mean": statistics.fmean(processes),
        "kinds": sorted({node.kind for node in nodes}),
    }


def sample_nodes(nodes: tuple[Node, ...], count: int) -> list[Node]:
    """``count`` nodes spread evenly along the topological order (kept in that order)."""
    if count >= len(nodes):
        return list(nodes)
    step = len(nodes) / count
    return [nodes[int(step * i + step / 2)] for i in range(count)]


# -- helpers ----------------------------------------------------------------------------------
def _dbt() -> str:
    return str(Path(sys.executable).with_name("dbt"))


def _results_span(path: Path) -> dict[str, Any]:
    """First node start, last node end and their distance, from a run_results.json."""
    results = json.loads(path.read_text())["results"]
    starts, ends = [], []
    for result in results:
        timing = result.get("timing") or []
        if timing:
            starts.append(when(timing[0]["started_at"]))
            ends.append(when(timing[-1]["completed_at"]))
    if not starts:
        return {"span": None, "first_start": None, "count": len(results)}
    return {"span": max(ends) - min(starts), "first_start": min(starts), "count": len(results)}


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (linear interpolation) of a non-empty list."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def when(iso: str) -> float:
    """Epoch seconds of one of dbt's timestamps (which must be there)."""
    seconds = epoch_seconds(iso)
    assert seconds is not None, f"not a timestamp: {iso!r}"
    return seconds
