"""The run report, drawn from records written into an in-memory status store.

The DAG (seconds after the first start, dbt thread in brackets)::

    raw 0-1 [1] ─┬─ stg 1-2 [1] ──┬─ orders 2-4 [2] ─┬─ not_null_orders 4-4.5 [1]
                 └─ side 1-1.5 [2] ┘                  └─ flaky: failed in the producer, built by
                    └─ broken 2-2.5 [1] FAILED               its consumer 5-5.8 [fallback]
                         └─ broken_child upstream_failed (never built)

The run ends with flaky, so the critical path is raw → stg → orders → flaky.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

import pytest
from rich.console import Console

from dbt_celery.core.kv import MemoryKV
from dbt_celery.core.plan import GraphNode, RunPlan
from dbt_celery.core.records import NodeEvent, NodeOutcome, NodeState, ProducerPhase, ProducerState, RunDocument
from dbt_celery.core.store import StatusStore
from dbt_celery.core.summary import NodeStatus, RunStatus, summarize
from dbt_celery.errors import ConfigurationError
from dbt_celery.progress import result_table
from dbt_celery.report import critical_path, read_timeline, render_html, write_png

RUN = "run-report-1"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
T1, T2 = "Thread-1 (worker)", "Thread-2 (worker)"
BROKEN_MESSAGE = 'Binder Error: Referenced column "amount" not found in FROM clause! <candidates: id>'
# name: (resource type, parents, start, end, thread, dbt status, resolved by)
NODES = {
    "raw": ("seed", [], 0.0, 1.0, T1, "success", "producer"),
    "stg": ("model", ["raw"], 1.0, 2.0, T1, "success", "producer"),
    "side": ("model", ["raw"], 1.0, 1.5, T2, "success", "producer"),
    "orders": ("model", ["stg", "side"], 2.0, 4.0, T2, "success", "producer"),
    "not_null_orders": ("test", ["orders"], 4.0, 4.5, T1, "pass", "producer"),
    "broken": ("model", ["side"], 2.0, 2.5, T1, "error", "producer"),
    "flaky": ("model", ["orders"], 5.0, 5.8, "fallback", "success", "fallback"),
}
LAG = 0.3


def uid(name: str) -> str:
    return f"{NODES[name][0] if name in NODES else 'model'}.shop.{name}"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def write_run(store: StatusStore) -> None:
    """Write what a producer, a fallback build and the consumers would have written."""
    store.put_run(RUN, RunDocument({"project_dir": "/shop"}, at(-3).timestamp(), at(3600).timestamp()))
    parents = {name: [uid(p) for p in spec[1]] for name, spec in NODES.items()} | {"broken_child": [uid("broken")]}
    children = {name: [uid(c) for c, ps in parents.items() if uid(name) in ps] for name in parents}
    plan = {
        uid(name): GraphNode(
            uid(name), uid(name).split(".")[0], name, name, tuple(parents[name]), tuple(children[name])
        )
        for name in parents
    }
    RunPlan(RUN, plan).save(store)
    for name, (kind, _, start, end, thread, dbt_status, by) in NODES.items():
        state = NodeState.FAILED if dbt_status == "error" else NodeState.SUCCESS
        event = NodeEvent(
            uid(name), kind, dbt_status, state,
            started_at=at(start).replace(tzinfo=None).isoformat(),  # dbt's own timestamps are naive UTC
            finished_at=at(end).isoformat().replace("+00:00", "Z"),
            execution_time=end - start,
            message=BROKEN_MESSAGE if name == "broken" else None,
            adapter_response={"rows_affected": 200.0} if name == "orders" else {},  # as dbt's event has it
            resolved_by=by, thread=thread,
        )  # fmt: skip
        store.put_events(RUN, [event])
        reason = "node_failed" if state is NodeState.FAILED else "success"
        store.put_outcome(RUN, uid(name), NodeOutcome.of(state, reason, event, recorded_at=at(end + LAG).timestamp()))
    store.put_outcome(
        RUN,
        uid("broken_child"),
        NodeOutcome(NodeState.UPSTREAM_FAILED, "upstream_failed", message=f"not built: upstream node {uid('broken')}"),
    )
    store.put_producer(RUN, ProducerState(ProducerPhase.FINISHED, at(5).timestamp(), generation=1))


class Bars(HTMLParser):
    """Collect the SVG bar groups of a report: node id -> (lane, classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.bars: dict[str, tuple[str, set[str]]] = {}
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        classes = set((values.get("class") or "").split())
        if tag == "g" and "bar" in classes:
            assert values["data-node"] not in self.bars, "a node drawn twice"
            self.bars[values["data-node"]] = (values["data-lane"], classes)
        self.urls += [value or "" for name, value in attrs if name in ("src", "href", "xlink:href")]


@pytest.fixture(scope="module")
def store() -> StatusStore:
    store = StatusStore(MemoryKV())
    write_run(store)
    return store


@pytest.fixture(scope="module")
def page(store) -> str:
    return render_html(read_timeline(store, RUN))


@pytest.fixture(scope="module")
def bars(page) -> dict[str, tuple[str, set[str]]]:
    parser = Bars()
    parser.feed(page)
    assert not parser.urls, f"the report links elsewhere: {parser.urls}"
    return parser.bars


def test_the_records_carry_dbts_thread_through_to_the_status(store):
    status = summarize(store, RUN)
    assert status.state == "failed"
    assert status.nodes[uid("orders")].thread == T2
    assert status.nodes[uid("flaky")].thread == "fallback"
    assert status.nodes[uid("orders")].recorded_at == pytest.approx(at(4 + LAG).timestamp())


def test_one_bar_per_built_node_on_its_threads_lane(bars):
    assert {node: lane for node, (lane, _) in bars.items()} == {uid(name): spec[4] for name, spec in NODES.items()}
    assert uid("broken_child") not in bars  # never built: listed under the chart, not drawn


def test_producer_fallback_and_failed_builds_are_told_apart(bars, page):
    assert "producer" in bars[uid("orders")][1]
    assert "fallback" in bars[uid("flaky")][1]
    assert "failed" in bars[uid("broken")][1]
    # The failure's message, escaped, in its bar's tooltip and in the table under the chart.
    tooltip = re.search(r'data-node="model\.shop\.broken"[^>]*><title>(.*?)</title>', page, re.S).group(1)
    assert "Binder Error: Referenced column &quot;amount&quot; not found" in tooltip
    table = page[page.index("<h2>Failures") :]
    assert "&lt;candidates: id&gt;" in table and "broken_child" in table and "upstream_failed" in table


def test_the_critical_path_is_marked(bars, page):
    marked = {node for node, (_, classes) in bars.items() if "critical" in classes}
    assert marked == {uid("raw"), uid("stg"), uid("orders"), uid("flaky")}
    assert 'class="critical-link"' in page


def test_lag_tails_header_and_legend(page):
    assert page.count('class="lag"') == len(NODES)
    assert f"dbt-celery run {RUN}" in page and ">failed</span>" in page
    assert "8 nodes: 6 success, 1 failed, 1 upstream_failed" in page
    assert "wall time 9.1 s" in page  # submitted 3 s before the first start; flaky's outcome 6.1 s after it
    assert "1 fallback build" in page and "2 dbt threads" in page
    assert "critical path" in page and "lag: dbt finished" in page


def test_rows_affected_are_shown(page):
    row = re.search(r'<tr class="critical" data-node="model\.shop\.orders">(.*?)</tr>', page).group(1)
    assert '<td class="num">200</td>' in row


def test_nothing_is_fetched_from_elsewhere(page):
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page)


def test_critical_path_follows_the_parent_that_finished_last():
    ends = {"a": 1.0, "b": 3.0, "c": 2.0, "d": 4.0}
    parents = {"d": ["b", "c"], "b": ["a"], "c": ["a"]}
    assert critical_path(ends, parents) == ["a", "b", "d"]
    assert critical_path({}, parents) == []


def test_png_is_written(store, tmp_path):
    path = write_png(read_timeline(store, RUN), tmp_path / "run.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_that_built_nothing_still_gets_a_report(tmp_path):
    store = StatusStore(MemoryKV())
    store.put_run("empty", RunDocument({"project_dir": "/shop"}, at(0).timestamp(), at(60).timestamp()))
    store.put_producer("empty", ProducerState(ProducerPhase.FAILED, at(1).timestamp(), error="profile not found"))
    timeline = read_timeline(store, "empty")
    page = render_html(timeline)
    assert "No node was built" in page and "profile not found" in page
    assert write_png(timeline, tmp_path / "empty.png").read_bytes()[:4] == b"\x89PNG"


def test_png_without_matplotlib_is_one_clear_error(store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an install without the extra sees
    with pytest.raises(ConfigurationError, match=r"dbt-celery\[report\]"):
        write_png(read_timeline(store, RUN), tmp_path / "run.png")
    assert not (tmp_path / "run.png").exists()


def test_final_table_prints_long_names_in_full_and_rows_affected():
    long_name = "accepted_values_stg_payments_payment_method__credit_card__coupon__bank_transfer__gift_card"
    nodes = {
        f"test.shop.{long_name}": NodeStatus(f"test.shop.{long_name}", long_name, "test", NodeState.SUCCESS, "pass"),
        "model.shop.orders": NodeStatus(
            "model.shop.orders", "orders", "model", NodeState.SUCCESS, "success", rows_affected=123456
        ),
    }
    console = Console(width=80, record=True)
    console.print(result_table(RunStatus("r1", "success", nodes, None)))
    text = console.export_text()
    folded = "".join(re.findall(r"^│ (\S+)", text, re.M))  # the node column, its wrapped lines joined
    assert long_name in folded and "…" not in text
    assert "123,456" in text
