"""R4: what dbt-celery's own bookkeeping costs on big graphs, with no dbt at all.

A synthetic :class:`~dbt_celery.dbt.project.ProjectGraph` of N nodes (half models in
layers with 1-5 parents, half ``not_null`` tests, test edges as ``dbt build`` adds
them) is planned, saved and its root consumers enqueued on a Redis broker, on a queue
no worker reads; then N node events are written one by one, as the producer writes
them while dbt runs (plain, and fenced by a producer lease as the producer's own
writes are). The queue and the database are emptied afterwards.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from typing import Any

import redis
from celery import Celery

from dbt_celery.celery.backends import store_for
from dbt_celery.celery.config import create_app, settings_from_env
from dbt_celery.celery.messages import enqueue
from dbt_celery.core.plan import GraphNode, RunPlan
from dbt_celery.core.records import NodeEvent, NodeState
from dbt_celery.core.spec import DEFAULT_IDLE_WAIT
from dbt_celery.core.store import PRODUCER_LEASE, StatusStore, encode_payload
from dbt_celery.dbt.project import ProjectGraph

#: Events per write in the batched case: what the producer writes when its four dbt threads
#: finish together (it writes whatever dbt said since its last write, up to BATCH_MAX).
PRODUCER_BATCH = 4
#: The queue the R4 root consumers are sent to; no worker reads it, it is deleted after.
SCALE_QUEUE = "bench.scale"
WRITE_COMMANDS = ("set", "setex", "evalsha", "multi", "exec", "publish")


def synthetic_graph(size: int, *, max_parents: int = 5, seed: int = 11) -> ProjectGraph:
    """A ProjectGraph of ``size`` nodes (models and their tests), without dbt."""
    rng = random.Random(seed)
    models = max(1, size // 2)
    layer_count = max(2, round(math.sqrt(models)))
    names = [f"model.bench.m_{i:05d}" for i in range(models)]
    tests = {name: f"test.bench.not_null_{name.rsplit('.', 1)[1]}_id.{i:010x}" for i, name in enumerate(names)}
    bounds = [round(models * i / layer_count) for i in range(layer_count + 1)]
    parents: dict[str, set[str]] = {}
    for layer in range(layer_count):
        for index in range(bounds[layer], bounds[layer + 1]):
            name = names[index]
            if layer == 0:
                parents[name] = set()
                continue
            previous = names[bounds[layer - 1] : bounds[layer]]
            earlier = names[: bounds[layer]]
            picked = {rng.choice(previous)} | set(
                rng.sample(earlier, rng.randint(1, min(max_parents, len(earlier))) - 1)
            )
            # dbt build's test edges: a model also waits for its parents' tests.
            parents[name] = picked | {tests[parent] for parent in picked}
    for name in names[: size - models]:
        parents[tests[name]] = {name}
    children: dict[str, set[str]] = {uid: set() for uid in parents}
    for uid, ups in parents.items():
        for parent in ups:
            children[parent].add(uid)
    nodes = {}
    for uid, ups in parents.items():
        kind = uid.split(".", 1)[0]
        short = uid.split(".")[2]
        nodes[uid] = GraphNode(
            unique_id=uid,
            resource_type=kind,
            name=short,
            selector=f"fqn:bench.{short}",
            parents=tuple(sorted(ups)),
            children=tuple(sorted(children[uid])),
            tests=(tests[uid],) if kind == "model" and tests[uid] in parents else (),
        )
    return ProjectGraph(nodes=nodes)


def measure_scale(redis_url: str, size: int) -> dict[str, Any]:
    """Time plan+save+enqueue and ``size`` node-event writes for one graph size."""
    app = _scale_app(redis_url)
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    try:
        graph = synthetic_graph(size)
        store = store_for(app)
        run_id = str(uuid.uuid4())

        started = time.perf_counter()
        plan = RunPlan(run_id, dict(graph.nodes))
        plan.save(store)
        saved = time.perf_counter()
        roots = plan.roots()
        enqueue(app, run_id, plan.nodes, roots, idle_wait=DEFAULT_IDLE_WAIT)
        enqueued = time.perf_counter()
        queued_messages = client.llen(SCALE_QUEUE)

        events = [_event(uid, node.resource_type) for uid, node in plan.nodes.items()]
        before = _calls(client)
        write_started = time.perf_counter()
        for event in events:
            store.put_events(run_id, [event])
        written = time.perf_counter()
        after = _calls(client)
        direct = _direct_writes(client, store, str(uuid.uuid4()), events, app.backend.expires)
        fenced = _fenced_writes(store, str(uuid.uuid4()), events)
        batched = _fenced_writes(store, str(uuid.uuid4()), events, PRODUCER_BATCH)
        return {
            "nodes": len(graph.nodes),
            "roots": len(roots),
            "queued": queued_messages,
            "plan_save": saved - started,
            "enqueue": enqueued - saved,
            "plan_enqueue": enqueued - started,
            "writes": written - write_started,
            "write_us": (written - write_started) / len(events) * 1e6,
            "direct_writes": direct,
            "fenced_writes": fenced,
            "batched_writes": batched,
            # Redis commands the writes issued, per write (server-wide counters: other tenants add a little).
            "write_commands": {
                name: (after.get(name, 0) - before.get(name, 0)) / len(events) for name in WRITE_COMMANDS
            },
        }
    finally:
        client.delete(SCALE_QUEUE)
        client.flushdb()
        app.close()


def _calls(client: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in client.info("commandstats").items()}


def _direct_writes(
    client: redis.Redis, store: StatusStore, run_id: str, events: list[NodeEvent], expires: Any
) -> float:
    """The same records as plain SETs (no MULTI/PUBLISH), for comparison with the library's path."""
    started = time.perf_counter()
    for event in events:
        key = store.key(run_id, f"nodefinished_{event.unique_id}")
        client.set(key, encode_payload(event.to_dict()), ex=expires or None)
    return time.perf_counter() - started


def _fenced_writes(store: StatusStore, run_id: str, events: list[NodeEvent], batch: int = 1) -> float:
    """The same records written as the producer writes them, fenced by the run's lease, ``batch`` per write."""
    held = store.acquire(run_id, PRODUCER_LEASE, "bench-scale", ttl=600)
    assert held is not None
    started = time.perf_counter()
    for start in range(0, len(events), batch):
        if not store.put_events(run_id, events[start : start + batch], held):
            raise RuntimeError(f"R4: the fenced write of {events[start].unique_id} was refused")
    return time.perf_counter() - started


def _scale_app(redis_url: str) -> Celery:
    settings = settings_from_env({"CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url})
    return create_app({**settings, "dbt_celery_consumer_queue": SCALE_QUEUE})


def _event(unique_id: str, resource_type: str) -> NodeEvent:
    status = "pass" if resource_type == "test" else "success"
    return NodeEvent(
        unique_id=unique_id,
        resource_type=resource_type,
        dbt_status=status,
        outcome=NodeState.SUCCESS,
        started_at="2026-01-01T00:00:00.000000",
        finished_at="2026-01-01T00:00:00.250000",
        execution_time=0.25,
        message="OK" if resource_type == "test" else "CREATE TABLE",
        adapter_response={"_message": "OK", "rows_affected": 100000},
        failures=0 if resource_type == "test" else None,
    )
