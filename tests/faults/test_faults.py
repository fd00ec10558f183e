"""Fault injection on real workers: killed, stalled and crashing processes, a private Redis.

Every test builds the audited PostgreSQL project (seven models that log each build's start
and end to an audit table) on its own redis-server with real ``celery worker`` processes,
breaks something on purpose, and checks that

* the run ends (a terminal state) within a stated bound,
* no node was built by two dbt invocations at overlapping times (``audit.overlaps()``),
* no build started after the run ended, and
* every node's final status is what dbt itself would report.

The project's DAG: a -> {b, c, f}; {b, c} -> d -> {e, not_null_d_id}; f -> g -> not_null_g_id.
Conditions are waited for by polling the store or the audit table, never by fixed sleeps
(except where a test waits for something *not* to happen).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dbt_celery.celery.backends import store_for
from dbt_celery.celery.messages import WATCH_INTERVAL
from dbt_celery.celery.tasks import TURN_POLL
from dbt_celery.core.plan import load_nodes, node_entry_name, plan_summary
from dbt_celery.core.records import NodeState
from dbt_celery.core.spec import DEFAULT_HEARTBEAT_TIMEOUT, RunSpec
from dbt_celery.core.store import encode_payload
from dbt_celery.core.summary import RunStatus
from dbt_celery.dbt.fallback import build_node
from dbt_celery.run import DbtRun, submit
from tests.faults.fault_fixtures import Audit, FaultWorkers, PrivateRedis, audited_spec, fault_app
from tests.helpers import wait_for

MODELS = {"a", "b", "c", "d", "e", "f", "g"}
#: Seconds of a consumer's silence before the watchdog (or the producer) sends it again.
REARM_AFTER = 5.0
#: Seconds after the end of a run during which no build may start (checked, not slept, where possible).
SETTLE = 2.0

_T = TypeVar("_T")
Workers = Callable[..., FaultWorkers]


# -- helpers ------------------------------------------------------------------------------
def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def uid_of(run: DbtRun, name: str) -> str:
    """The unique id of a planned node by its name."""
    planned = plan_summary(run.store, run.id) or {}
    (found,) = [uid for uid, info in planned.items() if info["name"] == name]
    return found


def overlapping(audit: Audit) -> set[tuple[str, frozenset[str]]]:
    """audit.overlaps() as (node, {invocation, invocation}) pairs, whichever started first."""
    return {(node, frozenset(pair)) for node, *pair in audit.overlaps()}


def planned(run: DbtRun) -> dict[str, dict[str, Any]]:
    return wait_for(lambda: plan_summary(run.store, run.id), 60, "the plan")


def reported(run: DbtRun) -> set[str]:
    """Nodes the store holds a dbt record of."""
    return set(run.store.node_events(run.id, plan_summary(run.store, run.id) or {}))


def reported_models(run: DbtRun) -> set[str]:
    return {uid.rsplit(".", 1)[-1] for uid in reported(run) if uid.startswith("model.")}


def spec_for(project: Path, audit: Audit, **options: Any) -> RunSpec:
    """The audited spec with the knobs of these tests: quick leases and quick re-sends."""
    knobs: dict[str, Any] = {"heartbeat_timeout": 4.0, "rearm_after": REARM_AFTER, "timeout": 180.0}
    return audited_spec(project, audit, **{**knobs, **options})


def explain(status: RunStatus | None, workers: FaultWorkers, *roles: str) -> str:
    """What to print when an assertion fails: the run and the end of the workers' logs."""
    parts = []
    if status is not None:
        parts.append(f"state={status.state} error={status.error}")
        parts.append(repr({n.name: (n.status.value, n.reason, n.message) for n in status.nodes.values()}))
    for role in roles or tuple(workers.processes):
        parts.append(f"--- {role} ---\n{workers.tail(role, 4000)}")
    return "\n".join(parts)


def assert_no_build_after(audit: Audit, ended: datetime) -> None:
    """No build started once the run had ended (waits SETTLE seconds for a late one to show)."""
    time.sleep(max(0.0, SETTLE - (now_utc() - ended).total_seconds()))
    assert audit.started_after(ended) == []


def all_success(status: RunStatus) -> bool:
    return status.state == "success" and all(node.status is NodeState.SUCCESS for node in status.nodes.values())


# -- 1. a consumer worker dies -------------------------------------------------------------
def test_killed_consumer_worker_is_rearmed(
    private_redis: PrivateRedis, audit: Audit, audited_project: Path, fault_workers: Workers
) -> None:
    workers = fault_workers(private_redis.url)
    run = submit(spec_for(audited_project, audit, sleep=1.0), app=fault_app(private_redis.url))
    wait_for(lambda: reported_models(run), 60, "the first model's record")
    # Every message the worker held goes with it: the consumers' polls (countdowns), which
    # Redis hands back only after its visibility timeout (900 s). The run's watchdog lives on
    # the producer queue, so it survives and re-sends each consumer silent for rearm_after.
    workers.kill("consumer")
    time.sleep(2)
    workers.start("consumer")

    # Read the status without waiting through run.wait(), which would help by tending the run:
    # the recovery must come from the workers alone.
    status = wait_for(lambda: (s := run.status()).done and s, REARM_AFTER + 2 * WATCH_INTERVAL + 15, "the run's end")
    ended = now_utc()
    assert all_success(status), explain(status, workers)
    assert len(status.nodes) == 9
    assert audit.builds_per_node() == dict.fromkeys(MODELS, 1)
    assert audit.unfinished() == [] and audit.overlaps() == []
    assert len({row.invocation_id for row in audit.rows()}) == 1  # the producer's build, nothing inline
    assert_no_build_after(audit, ended)


# -- 2. a consumer that crashes --------------------------------------------------------------
def test_consumer_that_crashes_ends_with_an_error_outcome(
    private_redis: PrivateRedis, audit: Audit, audited_project: Path, fault_workers: Workers
) -> None:
    workers = fault_workers(private_redis.url)
    # A long timeout, so the watchdog's expiry at the deadline cannot pass for a recovery.
    run = submit(spec_for(audited_project, audit, sleep=1.0, timeout=300.0), app=fault_app(private_redis.url))
    planned(run)
    target = uid_of(run, "e")  # a leaf: a -> {b, c} -> d -> e
    # A valid payload of the wrong shape where e's plan entry was, long before d is built.
    private_redis.client().set(run.store.key(run.id, node_entry_name(target)), encode_payload({"bogus": 1}))
    assert not reported_models(run) & {"b", "c", "d"}, "too late: e's parents were already built"

    try:
        status = run.wait(timeout=40)  # the build takes ~6 s; a crash must not hold the run up
    except TimeoutError:
        pytest.fail(f"the run never ended after a consumer crash\n{explain(run.status(), workers, 'consumer')}")
    ended = now_utc()
    node = status.nodes[target]
    assert node.status is NodeState.ERROR, explain(status, workers, "consumer")
    assert node.reason == "error"
    assert node.message and any(word in node.message for word in ("plan", "GraphNode")), node.message
    # e has no descendants to end upstream_failed; every other node was built and passed.
    assert {n.name: n.status for uid, n in status.nodes.items() if uid != target} == {
        n.name: NodeState.SUCCESS for uid, n in status.nodes.items() if uid != target
    }
    assert status.state == "failed"
    assert audit.builds_per_node() == dict.fromkeys(MODELS, 1)  # dbt built e fine; only its consumer broke
    assert audit.overlaps() == []
    assert_no_build_after(audit, ended)


# -- 3. a producer that stalls past its lease ------------------------------------------------
#: Records only the run's watchdog writes (its rounds and its "run finished" announcement).
WATCHDOG_RECORDS = ("claim_announced_finished", "claim_watch_round_", "claim_watchdog_after_", "seen___watchdog__")


def producer_records(private_redis: PrivateRedis, run_id: str) -> dict[bytes, bytes]:
    """Every record of a run but the watchdog's own, which keeps working while a producer is stalled."""
    keys = sorted(private_redis.client().keys(f"dbt-celery-{run_id}-*"))
    records = dict(zip(keys, private_redis.client().mget(keys)))
    return {key: value for key, value in records.items() if not any(kind.encode() in key for kind in WATCHDOG_RECORDS)}


def test_stalled_producer_is_fenced_and_resumed(
    private_redis: PrivateRedis, audit: Audit, audited_project: Path, fault_workers: Workers
) -> None:
    workers = fault_workers(private_redis.url)
    run = submit(spec_for(audited_project, audit, sleep=1.0, heartbeat_timeout=3.0), app=fault_app(private_redis.url))
    wait_for(lambda: reported_models(run), 60, "the first model's record")
    workers.pause("producer")  # the worker and its in-process dbt freeze; the lease runs out 3 s later
    stopped_at = now_utc()
    # A resumed producer needs a producer worker: a second one on the same queues.
    workers.roles["producer2"] = workers.roles["producer"]
    workers.start("producer2")

    def generation() -> int:
        producer = run.store.producer(run.id)
        return producer.generation if producer else 0

    wait_for(lambda: generation() == 2, 40, "a resumed producer (generation 2)")
    try:
        status = run.wait(timeout=45)  # generation 2 builds what was left while generation 1 is frozen
    except TimeoutError:
        pytest.fail(f"the resumed producer did not finish the run\n{explain(run.status(), workers, 'producer2')}")
    ended = now_utc()
    assert all_success(status), explain(status, workers, "producer2")
    producer = status.producer
    assert producer is not None and producer.generation == 2 and producer.phase.value == "finished"

    # Every record of the run as it stands; the stalled producer comes back to life now.
    before = producer_records(private_redis, run.id)
    workers.resume("producer")
    stalled = run.producer_result.get(timeout=30)  # generation 1's task returns once it noticed
    assert stalled["generation"] == 1 and stalled["lease_lost"] is True, stalled
    time.sleep(2)
    assert producer_records(private_redis, run.id) == before  # it wrote nothing at all

    rows = audit.rows()
    old = rows[0].invocation_id  # generation 1 built model a first
    (new,) = {row.invocation_id for row in rows} - {old}  # generation 2: one dbt build for all that was left
    assert audit.builds_per_node() == dict.fromkeys(MODELS, 1)
    # What the audit shows of a node generation 1 had in flight when it froze (b, c and f start
    # the moment a is reported): a 'start' row of the old invocation and never an 'end' one.
    # The freeze lands around their pre-hooks: a thread frozen after its pre-hook left its
    # 'start' row before the freeze; one frozen before it writes the row right after SIGCONT,
    # i.e. after the run ended (seen in practice). Generation 2 is never blocked by the frozen
    # builds: after the pre-hook's own `commit;` the audited models run in autocommit, so no
    # transaction stays open, and dbt drops a leftover <model>__dbt_tmp before building. Once
    # awake, a frozen thread's next statement (renaming the tmp table generation 2 already
    # replaced) fails, and the lease keeper's first beat finds the lease lost and interrupts
    # dbt. PostgreSQL cannot fence a frozen process; the store can, and did. overlaps() counts
    # a build without an end as running "now", so each frozen build overlaps generation 2's
    # build of the same node: the one exception allowed here.
    frozen = {node for node, invocation in audit.unfinished() if invocation == old}
    assert frozen <= MODELS - {"a"}
    assert overlapping(audit) <= {(node, frozenset((old, new))) for node in frozen}
    assert all(row.invocation_id == new or row.at < stopped_at for row in rows if row.phase == "end")
    late = audit.started_after(ended)
    assert {(row.node, row.invocation_id) for row in late} <= {(node, old) for node in frozen}


# -- 4. a run whose deadline passes while it waits for its turn -------------------------------
def test_deadline_applies_while_queued_behind_another_run(
    private_redis: PrivateRedis, audit: Audit, audited_project: Path, fault_workers: Workers
) -> None:
    workers = fault_workers(private_redis.url)
    # A second producer worker, so the second run's producer is not merely stuck in the broker
    # behind the first one's: it runs, finds the target's turn taken, and waits for it (retrying
    # every TURN_POLL s). With a single producer worker the message would wait in the broker and
    # the deadline apply only once that worker is free (or at deadline + DEADLINE_GRACE).
    workers.roles["producer2"] = workers.roles["producer"]
    workers.start("producer2")
    app = fault_app(private_redis.url)
    first = submit(spec_for(audited_project, audit, sleep=2.0, threads=2), app=app)  # ~12 s
    wait_for(lambda: (p := first.store.producer(first.id)) and p.phase.value != "queued", 30, "the first producer")
    second = submit(spec_for(audited_project, audit, sleep=2.0, timeout=3.0), app=app)
    submitted = time.monotonic()

    try:
        late = second.wait(timeout=30)
    except TimeoutError:
        pytest.fail(f"the second run outlived its 3 s timeout\n{explain(second.status(), workers)}")
    # Its deadline applied while it waited: it ended before the run it waited for.
    assert time.monotonic() - submitted < 3.0 + 2 * TURN_POLL + 5, explain(late, workers)
    assert not first.status().done
    assert late.state in ("failed", "cancelled"), explain(late, workers)
    # Reported over at its deadline; its producer, still waiting for the turn, built nothing.
    assert late.producer is not None and late.producer.phase.value in ("waiting", "cancelled") and late.nodes == {}

    status = first.wait(timeout=60)
    ended = now_utc()
    # When the turn comes, the late producer sees its deadline and stands down without building.
    wait_for(lambda: second.store.producer(second.id).phase.value == "cancelled", 30, "the late producer to stand down")
    assert all_success(status), explain(status, workers)
    assert audit.builds_per_node() == dict.fromkeys(MODELS, 1)
    assert len({row.invocation_id for row in audit.rows()}) == 1  # only the first run's producer built
    assert audit.overlaps() == []
    assert_no_build_after(audit, ended)


# -- 5. one target, two spellings ----------------------------------------------------------------
def test_two_mappings_differing_only_in_threads_take_turns(
    private_redis: PrivateRedis, audit: Audit, audited_project: Path, fault_workers: Workers
) -> None:
    workers = fault_workers(private_redis.url)
    workers.roles["producer2"] = workers.roles["producer"]  # both producers could build at once
    workers.start("producer2")
    app = fault_app(private_redis.url)
    base = spec_for(audited_project, audit, sleep=0.5)
    four, one = (dataclasses.replace(base, profile={**dict(base.profile or {}), "threads": n}) for n in (4, 1))
    assert four.profile != one.profile
    runs = [submit(four, app=app), submit(one, app=app)]

    finals = [run.wait(timeout=80) for run in runs]
    ended = now_utc()
    for status in finals:
        assert all_success(status), explain(status, workers)
    assert audit.overlaps() == []
    assert audit.builds_per_node() == dict.fromkeys(MODELS, 2)
    # They took turns: one run's build ended before the other's began.
    spans: dict[str, list[datetime]] = {}
    for row in audit.rows():
        spans.setdefault(row.invocation_id, []).append(row.at)
    assert len(spans) == 2
    (first_start, first_end), (second_start, _) = sorted((min(times), max(times)) for times in spans.values())
    assert first_end < second_start
    assert_no_build_after(audit, ended)


# -- 6. a fallback build delivered twice -----------------------------------------------------------
def test_a_fallback_delivered_twice_builds_once(
    private_redis: PrivateRedis,
    audit: Audit,
    audited_project: Path,
    fault_workers: Workers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGPASSWORD", "x")  # the fallback's dbt runs here, as a subprocess
    workers = fault_workers(private_redis.url)
    app = fault_app(private_redis.url)
    run = submit(spec_for(audited_project, audit, sleep=0.5), app=app)
    assert all_success(run.wait(timeout=60)), explain(run.status(), workers)
    store = store_for(app)
    target = uid_of(run, "e")
    node = load_nodes(store, run.id, [target])[target]
    document = store.run(run.id)
    assert document is not None
    spec, deadline = RunSpec.from_dict(document.spec), time.time() + 120

    # Two deliveries of the same consumer message, both wanting inline build number 1 of e.
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def deliver() -> None:
        barrier.wait()
        try:
            results.append(build_node(store, spec, run.id, node, 1, deadline))
        except BaseException as exc:  # noqa: BLE001 - reported below
            results.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not any(thread.is_alive() for thread in threads)
    events = [result for result in results if result is not None]
    assert len(results) == 2 and len(events) == 1, results
    (event,) = events
    assert event.unique_id == target and event.outcome is NodeState.SUCCESS and event.resolved_by == "fallback", event
    assert store.node_event(run.id, target) == event  # the builder's record replaced the producer's
    # A third, late delivery of the same build finds it done and builds nothing.
    assert build_node(store, spec, run.id, node, 1, deadline) is None

    builds = audit.builds_per_node()
    assert builds == {**dict.fromkeys(MODELS, 1), "e": 2}  # the producer's build and one inline build
    assert len({invocation for name, invocation in audit.intervals() if name == "e"}) == 2
    assert audit.unfinished() == [] and audit.overlaps() == []
    # (No "nothing after the run ended" check here: these builds come after it on purpose.)


# -- 7. a producer killed mid-build ---------------------------------------------------------------
def test_killed_producer_resumes_in_one_build(
    private_redis: PrivateRedis, audit: Audit, audited_project: Path, fault_workers: Workers
) -> None:
    workers = fault_workers(private_redis.url)
    run = submit(spec_for(audited_project, audit, sleep=1.0, heartbeat_timeout=3.0), app=fault_app(private_redis.url))
    wait_for(lambda: len(reported_models(run)) >= 3, 60, "about half of the models' records")  # a, b, c, f
    workers.kill("producer")  # the worker and its in-process dbt, mid-build (d and g run now)
    killed_at = now_utc()
    before = reported_models(run)  # final: nothing writes for the dead producer
    workers.start("producer")

    try:
        status = run.wait(timeout=60)  # lease expiry (3 s), a worker boot, the resumed build
    except TimeoutError:
        pytest.fail(f"the killed producer was not resumed\n{explain(run.status(), workers, 'producer')}")
    ended = now_utc()
    assert all_success(status), explain(status, workers, "producer")
    assert status.producer is not None and status.producer.generation == 2
    assert {n.resolved_by for n in status.nodes.values()} == {"producer"}  # nothing fell back to inline builds

    rows = audit.rows()
    old = rows[0].invocation_id
    after = [row for row in rows if row.at > killed_at]
    resumed = {row.invocation_id for row in after}
    assert len(resumed) == 1 and old not in resumed, after  # ONE new dbt invocation ...
    (new,) = resumed
    left = MODELS - before
    assert {row.node for row in after} == left  # ... for exactly the models not reported before the kill
    assert sorted((row.node, row.phase) for row in after) == sorted((n, p) for n in left for p in ("start", "end"))
    # The models the dead producer had in flight: a 'start' row of the old invocation and no
    # 'end' (its connection died with it). overlaps() counts a build without an end as still
    # running, so each of them "overlaps" the resumed build of the same node: the one exception.
    in_flight = {node for node, invocation in audit.unfinished() if invocation == old}
    assert in_flight <= left
    assert all(invocation == old for _, invocation in audit.unfinished())  # the resumed build finished all it began
    assert overlapping(audit) <= {(node, frozenset((old, new))) for node in in_flight}
    builds = audit.builds_per_node()
    assert {node: count for node, count in builds.items() if node not in left} == dict.fromkeys(MODELS - left, 1)
    # A model the dead producer committed in the instant before the kill, without a record yet,
    # is built once more by the resumed producer; every other unreported model exactly once.
    for node in left:
        finished_before = [r for r in rows if r.node == node and r.phase == "end" and r.at <= killed_at]
        assert builds[node] == 1 + len(finished_before), (node, builds[node], finished_before)
    assert_no_build_after(audit, ended)


# -- 8. cancelling a run --------------------------------------------------------------------------
def test_cancel_stops_dbt_and_ends_nodes_cancelled(
    private_redis: PrivateRedis, audit: Audit, audited_project: Path, fault_workers: Workers
) -> None:
    workers = fault_workers(private_redis.url)
    # The default lease (heartbeat_timeout), as a user's run has it: cancelling must not depend on it.
    spec = spec_for(audited_project, audit, sleep=2.0, heartbeat_timeout=DEFAULT_HEARTBEAT_TIMEOUT)
    run = submit(spec, app=fault_app(private_redis.url))
    wait_for(lambda: reported_models(run), 60, "the first model's record")
    assert run.cancel("stop it") is True
    cancelled_at = now_utc()
    assert run.cancel("again") is False

    try:
        status = run.wait(timeout=20)
    except TimeoutError:
        pytest.fail(f"the cancelled run did not end\n{explain(run.status(), workers)}")
    ended = now_utc()
    assert status.state == "cancelled", explain(status, workers)
    assert audit.overlaps() == []
    problems = []
    # dbt was interrupted: it may finish what it had in flight (b, c, f start with a's record),
    # and starts nothing after that.
    late = audit.started_after(cancelled_at + timedelta(seconds=2))
    if late:
        problems.append(f"dbt went on building after the cancel: {sorted({row.node for row in late})} started later")
    if not MODELS - set(audit.builds_per_node()):
        problems.append("dbt built every model although the run was cancelled")
    # What dbt would say: the nodes it built and reported passing passed; every other node was
    # never finished and ends cancelled (README: "unfinished nodes end cancelled").
    records = run.store.node_events(run.id, status.nodes)
    passed = {uid for uid, event in records.items() if event.outcome is NodeState.SUCCESS}
    for uid, node in sorted(status.nodes.items()):
        expected = "success" if uid in passed else "cancelled"
        if node.status.value != expected:
            problems.append(f"{node.name}: {node.status.value} ({node.message}), dbt says {expected}")
    assert not problems, "\n".join(problems) + "\n\n" + explain(status, workers, "consumer")
    assert_no_build_after(audit, ended)


# -- 9. either worker killed at a quarter, half, three quarters of the build -----------------------
@pytest.mark.parametrize("role", ["producer", "consumer"])
@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_a_worker_killed_mid_build(
    role: str, fraction: float, private_redis: PrivateRedis, audit: Audit, audited_project: Path, fault_workers: Workers
) -> None:
    workers = fault_workers(private_redis.url)
    run = submit(spec_for(audited_project, audit, sleep=1.0, heartbeat_timeout=3.0), app=fault_app(private_redis.url))
    wanted = max(1, round(fraction * len(MODELS)))
    wait_for(lambda: len(reported_models(run)) >= wanted, 90, f"{wanted} models' records")
    workers.kill(role)
    killed_at = now_utc()
    workers.start(role)
    # No run.wait(): it would tend the run itself; the workers must recover on their own.
    bound = REARM_AFTER + 2 * WATCH_INTERVAL + 30
    status = wait_for(lambda: (s := run.status()).done and s, bound, "the run's end")
    ended = now_utc()
    assert all_success(status), explain(status, workers)
    builds = audit.builds_per_node()
    if role == "consumer":  # consumers never build: the producer's one build stands
        assert builds == dict.fromkeys(MODELS, 1), builds
    else:  # a model committed just before the kill, but not yet recorded, is built once more
        assert set(builds) == MODELS, builds
    restarted = [row.node for row in audit.rows() if row.phase == "start" and row.at > killed_at]
    assert len(restarted) == len(set(restarted)), restarted  # after the kill, each model built at most once
    # Only a build the killed producer had in flight (started, never ended) may overlap its rebuild.
    cut_short = {node for node, _ in audit.unfinished()}
    assert role == "producer" or not cut_short
    assert {node for node, _ in overlapping(audit)} <= cut_short
    assert_no_build_after(audit, ended)
