"""Child release, descendant failure, the overlap turn and the run summary, on the in-memory store."""

from __future__ import annotations

import pytest

from dbt_celery.core.kv import MemoryKV
from dbt_celery.core.overlap import take_turn, target_key
from dbt_celery.core.plan import GraphNode, RunPlan, fail_descendants, load_nodes, ready_children
from dbt_celery.core.records import NodeEvent, NodeOutcome, NodeState, ProducerPhase, ProducerState, RunDocument
from dbt_celery.core.store import PRODUCER_LEASE, StatusStore
from dbt_celery.core.summary import DEADLINE_GRACE, summarize

#  a ─┬─ b ─┐
#     └─ c ─┴─ d ── e
EDGES = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": ["d"]}


def node(name: str) -> GraphNode:
    children = tuple(sorted(f"model.p.{c}" for c, ups in EDGES.items() if name in ups))
    return GraphNode(
        f"model.p.{name}", "model", name, f"fqn:p.{name}", tuple(f"model.p.{p}" for p in EDGES[name]), children
    )


@pytest.fixture
def store() -> StatusStore:
    store = StatusStore(MemoryKV())
    RunPlan("r", {f"model.p.{n}": node(n) for n in EDGES}).save(store)
    store.put_run("r", RunDocument({}, 0.0, 10_000.0))
    return store


def passed(store: StatusStore, *names: str) -> None:
    for name in names:
        store.put_outcome("r", f"model.p.{name}", NodeOutcome(NodeState.SUCCESS, "success"))


def test_a_child_is_ready_only_when_all_its_parents_passed(store):
    passed(store, "a", "b")
    assert ready_children(store, "r", node("b")) == []  # d still waits for c
    passed(store, "c")
    assert [n.name for n in ready_children(store, "r", node("c"))] == ["d"]


def test_a_failure_ends_every_descendant_once(store):
    assert sorted(
        n.unique_id for n in fail_descendants(store, "r", "model.p.b", node("b").children, NodeState.FAILED)
    ) == [
        "model.p.d",
        "model.p.e",
    ]
    outcomes = store.outcomes("r", ["model.p.d", "model.p.e"])
    assert {o.state for o in outcomes.values()} == {NodeState.UPSTREAM_FAILED}
    assert "model.p.b" in outcomes["model.p.d"].message
    assert fail_descendants(store, "r", "model.p.c", node("c").children, NodeState.FAILED) == []  # already ended


def test_a_sent_consumer_is_left_to_resolve_itself(store):
    store.claim("r", "enqueue_model.p.d")  # d's consumer is already out
    assert fail_descendants(store, "r", "model.p.b", node("b").children, NodeState.FAILED) == []


def test_a_cancelled_node_cancels_its_descendants(store):
    assert sorted(
        n.unique_id for n in fail_descendants(store, "r", "model.p.b", node("b").children, NodeState.CANCELLED)
    ) == [
        "model.p.d",
        "model.p.e",
    ]
    assert {o.state for o in store.outcomes("r", ["model.p.d", "model.p.e"]).values()} == {NodeState.CANCELLED}


def test_an_unreadable_plan_entry_still_gets_its_consumer(store):
    from dbt_celery.core.plan import node_entry_name
    from dbt_celery.core.store import encode_payload

    store.kv.set_many({store.key("r", node_entry_name("model.p.d")): encode_payload({"bogus": 1})})
    passed(store, "a", "b", "c")
    ready = ready_children(store, "r", node("c"))
    assert [n.unique_id for n in ready] == ["model.p.d"]  # a placeholder: its consumer will end it error
    # Its descendants are still found, through the other nodes' entries.
    assert fail_descendants(store, "r", "model.p.d", (), NodeState.ERROR) == []
    from dbt_celery.core.plan import children_of

    assert children_of(store, "r", "model.p.d") == ("model.p.e",)


def test_plan_round_trips(store):
    plan = RunPlan.load(store, "r")
    assert plan is not None and plan.roots() == ["model.p.a"]
    assert load_nodes(store, "r", ["model.p.d"])["model.p.d"] == node("d")


def test_runs_of_one_target_take_turns():
    store = StatusStore(MemoryKV())
    key = target_key({"type": "postgres", "host": "h", "database": "d", "schema": "s"})
    done: set[str] = set()
    assert take_turn(store, "first", key, done.__contains__) is None
    assert take_turn(store, "second", key, done.__contains__) == "first"
    assert take_turn(store, "third", key, done.__contains__) == "first"
    done.add("first")
    assert take_turn(store, "second", key, done.__contains__) is None
    assert take_turn(store, "third", key, done.__contains__) == "second"


def test_the_summary_follows_the_nodes_and_the_producer(store):
    store.put_producer("r", ProducerState(ProducerPhase.RUNNING, 1.0, generation=1))
    store.acquire("r", PRODUCER_LEASE, "p", ttl=60)
    store.put_events("r", [NodeEvent("model.p.a", "model", "success", NodeState.SUCCESS)])
    status = summarize(store, "r", now=5.0)
    assert status.state == "running" and status.nodes["model.p.a"].status is NodeState.REPORTED
    passed(store, *EDGES)
    store.put_producer("r", ProducerState(ProducerPhase.FINISHED, 2.0, generation=1))
    assert summarize(store, "r").state == "success"


def test_a_run_past_its_deadline_ends_whatever_its_records_say(store):
    store.put_producer("r", ProducerState(ProducerPhase.RUNNING, 1.0, generation=1))
    status = summarize(store, "r", now=10_000.0 + DEADLINE_GRACE + 1)
    assert status.done and status.state == "failed" and "timeout" in status.error


def test_cancelled_nodes_make_a_cancelled_run(store):
    passed(store, "a", "b", "c", "d")
    store.put_outcome("r", "model.p.e", NodeOutcome(NodeState.CANCELLED, "cancelled"))
    store.put_producer("r", ProducerState(ProducerPhase.CANCELLED, 2.0))
    store.cancel("r", "by a test")
    assert summarize(store, "r").state == "cancelled"


@pytest.mark.parametrize("seed", range(12))
def test_the_transitive_reduction_is_networkxs(seed):
    import random

    import networkx

    from dbt_celery.dbt.project import transitive_reduction

    rng = random.Random(seed)
    size = rng.randint(1, 60)
    graph = networkx.DiGraph()
    graph.add_nodes_from(range(size))
    for child in range(size):
        for parent in rng.sample(range(child), min(child, rng.randint(0, 6))):
            graph.add_edge(parent, child, edge_type=rng.choice(["parent_test", None]))
    ours, theirs = transitive_reduction(graph), networkx.transitive_reduction(graph)
    assert set(ours.nodes) == set(theirs.nodes) and set(ours.edges) == set(theirs.edges)


def test_a_watchers_cache_reads_each_ended_node_once_and_agrees_with_a_fresh_read(store):
    from dbt_celery.core.summary import SummaryCache

    cache = SummaryCache()
    store.put_producer("r", ProducerState(ProducerPhase.RUNNING, 1.0, generation=1))
    store.acquire("r", PRODUCER_LEASE, "p", ttl=60)
    # An upstream failure's outcome comes before dbt's skip record: the record still shows once it lands.
    store.put_outcome("r", "model.p.e", NodeOutcome(NodeState.UPSTREAM_FAILED, "upstream_failed"))
    assert summarize(store, "r", now=5.0, cache=cache) == summarize(store, "r", now=5.0)
    store.put_events("r", [NodeEvent("model.p.e", "model", "skipped", NodeState.UPSTREAM_FAILED)])
    assert summarize(store, "r", now=5.0, cache=cache).nodes["model.p.e"].dbt_status == "skipped"
    for step in (["a"], ["b", "c"], ["d"]):
        store.put_events("r", [NodeEvent(f"model.p.{n}", "model", "success", NodeState.SUCCESS) for n in step])
        assert summarize(store, "r", now=5.0, cache=cache) == summarize(store, "r", now=5.0)
        passed(store, *step)
        assert summarize(store, "r", now=5.0, cache=cache) == summarize(store, "r", now=5.0)
    assert set(cache.final) == {f"model.p.{n}" for n in EDGES}
    # An ended node is not read again: its outcome key could vanish and the watcher would not notice.
    store.kv.data.pop(store.key("r", "outcome_model.p.a"))
    assert summarize(store, "r", now=5.0, cache=cache).nodes["model.p.a"].status is NodeState.SUCCESS
    assert summarize(store, "r", now=5.0).nodes["model.p.a"].status is NodeState.REPORTED
