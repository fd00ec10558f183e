"""A run report people look at: one self-contained HTML timeline (inline SVG and CSS), and a PNG.

Each built node is a bar on the lane of the dbt thread that built it (inline builds of
consumers go on a ``fallback`` lane), coloured by who built it and whether it failed. A
thin tail after a bar is the node's *lag*: from dbt finishing the node to its consumer
recording the outcome. The *critical path* is the chain of dependent nodes that decided
when the build ended: from the node that finished last, back through the parent that
finished last, to a node without a built parent.

:func:`read_timeline` gathers a run from the status store, :func:`render_html` and
:func:`write_png` draw it; ``dbt-celery report RUN_ID`` does all three. The HTML needs
no network at all: no scripts, no style sheets, no fonts from elsewhere.
"""

from __future__ import annotations

import dataclasses
import html
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from dbt_celery.core.plan import RunPlan
from dbt_celery.core.records import NodeState, epoch_seconds
from dbt_celery.core.store import StatusStore
from dbt_celery.core.summary import NodeStatus, RunStatus, summarize
from dbt_celery.errors import ConfigurationError

#: Bar colours and legend text, by kind of build.
KINDS: dict[str, tuple[str, str]] = {
    "producer": ("#4e79a7", "built by the producer's dbt build"),
    "fallback": ("#f28e2b", "built inline by its consumer (fallback)"),
    "failed": ("#e15759", "failed"),
    "skipped": ("#bab0ac", "skipped or stopped"),
}
LAG_COLOUR = "#5a5a5a"
CRITICAL_COLOUR = "#1a1a1a"
STATE_COLOURS = {"success": "#2e7d32", "failed": "#c62828", "cancelled": "#b26a00"}
FALLBACK_LANE = "fallback"
UNKNOWN_LANE = "unknown thread"
_FAILED = frozenset({NodeState.FAILED, NodeState.ERROR, NodeState.NOT_RUN})
_STOPPED = frozenset({NodeState.SKIPPED, NodeState.UPSTREAM_FAILED, NodeState.CANCELLED})
_PROBLEMS = _FAILED | {NodeState.UPSTREAM_FAILED, NodeState.CANCELLED}


@dataclasses.dataclass(frozen=True)
class Bar:
    """One built node on the timeline; times are epoch seconds."""

    node: NodeStatus
    lane: str
    kind: str
    start: float
    end: float
    recorded: float | None
    critical: bool = False

    @property
    def lag(self) -> float | None:
        """Seconds from dbt finishing the node to its consumer recording the outcome."""
        return None if self.recorded is None else max(0.0, self.recorded - self.end)


@dataclasses.dataclass(frozen=True)
class Timeline:
    """Everything a report shows of one run."""

    status: RunStatus
    bars: list[Bar]
    lanes: list[str]
    critical: list[str]  # unique ids along the critical path, first to last
    submitted_at: float | None = None

    @property
    def origin(self) -> float:
        """Time zero of the chart: the first node's start."""
        return min((bar.start for bar in self.bars), default=0.0)

    @property
    def span(self) -> float:
        """Seconds from the first node's start to the last node's end or outcome."""
        ends = [max(bar.end, bar.recorded or bar.end) for bar in self.bars]
        return max(ends, default=self.origin) - self.origin

    @property
    def wall_time(self) -> float | None:
        """Seconds from the run's submission (else its first node) to its last node's outcome."""
        if not self.bars:
            return None
        start = min(self.origin, self.submitted_at) if self.submitted_at else self.origin
        return self.origin + self.span - start


# -- gathering ---------------------------------------------------------------------------
def read_timeline(store: StatusStore, run_id: str, status: RunStatus | None = None) -> Timeline:
    """Read a run's timeline from the status store (``status``: an already read ``DbtRun.status()``)."""
    status = status if status is not None else summarize(store, run_id)
    plan = RunPlan.load(store, run_id)
    parents = {uid: node.parents for uid, node in plan.nodes.items()} if plan else {}
    document = store.run(run_id)
    return build_timeline(status, parents, document.submitted_at if document else None)


def build_timeline(
    status: RunStatus, parents: Mapping[str, Sequence[str]], submitted_at: float | None = None
) -> Timeline:
    """Lay a run's nodes out on their threads' lanes and find its critical path."""
    timed = [(node, *times) for node in status.nodes.values() if (times := _times(node)) is not None]
    timed.sort(key=lambda item: (item[1], item[0].unique_id))
    critical = critical_path({node.unique_id: end for node, _, end in timed}, parents)
    on_path = set(critical)
    lanes = _pack([(_thread_lane(node), start, end) for node, start, end in timed])
    bars = [
        Bar(node, lane, _kind(node), start, end, node.recorded_at, node.unique_id in on_path)
        for (node, start, end), lane in zip(timed, lanes)
    ]
    return Timeline(status, bars, sorted(set(lanes), key=_lane_order), critical, submitted_at)


def critical_path(ends: Mapping[str, float], parents: Mapping[str, Sequence[str]]) -> list[str]:
    """The chain that ended last: from the last node to finish back through its last-finishing parent."""
    if not ends:
        return []
    node = max(ends, key=lambda uid: (ends[uid], uid))
    chain = [node]
    while candidates := [uid for uid in parents.get(node, ()) if uid in ends and uid not in chain]:
        node = max(candidates, key=lambda uid: (ends[uid], uid))
        chain.append(node)
    return chain[::-1]


def _times(node: NodeStatus) -> tuple[float, float] | None:
    start, end = epoch_seconds(node.started_at), epoch_seconds(node.finished_at)
    if start is None or end is None or end < start:
        return None
    return start, end


def _kind(node: NodeStatus) -> str:
    if node.status in _FAILED:
        return "failed"
    if node.status in _STOPPED:
        return "skipped"
    return "producer" if node.resolved_by == "producer" else "fallback"


def _thread_lane(node: NodeStatus) -> str:
    if node.thread:
        return node.thread
    return FALLBACK_LANE if node.resolved_by not in (None, "producer") else UNKNOWN_LANE


def _pack(items: Sequence[tuple[str, float, float]]) -> list[str]:
    """Each item's lane: its thread, or ``thread 2``… where builds of one thread overlap (parallel fallbacks)."""
    busy: dict[str, list[float]] = {}  # lane -> end of its last bar
    lanes = []
    for thread, start, end in items:
        ends = busy.setdefault(thread, [])
        row = next((i for i, last in enumerate(ends) if last <= start), len(ends))
        if row == len(ends):
            ends.append(end)
        ends[row] = end
        lanes.append(thread if row == 0 else f"{thread} {row + 1}")
    return lanes


def _lane_order(lane: str) -> tuple[int, int, str]:
    number = re.search(r"\d+", lane)
    group = 2 if lane.startswith(FALLBACK_LANE) else 3 if lane.startswith(UNKNOWN_LANE) else 1
    return group, int(number.group()) if number else 0, lane


# -- text shared by both renderings --------------------------------------------------------
def headline(timeline: Timeline) -> str:
    """One line: counts by status, wall time, threads, fallbacks and lag."""
    status = timeline.status
    counts = {state: status.count(state) for state in NodeState if status.count(state)}
    parts = [f"{len(status.nodes)} nodes: " + ", ".join(f"{n} {state.value}" for state, n in counts.items())]
    if timeline.wall_time is not None:
        parts.append(f"wall time {timeline.wall_time:.1f} s")
        if timeline.submitted_at and timeline.submitted_at < timeline.origin:
            parts.append(f"first node {timeline.origin - timeline.submitted_at:.1f} s after submission")
    threads = {bar.node.thread for bar in timeline.bars if bar.node.thread not in (None, FALLBACK_LANE)}
    parts.append(f"{len(threads)} dbt thread{'s' if len(threads) != 1 else ''}")
    fallbacks = sum(1 for node in status.nodes.values() if node.resolved_by not in (None, "producer"))
    if fallbacks:
        parts.append(f"{fallbacks} fallback build{'s' if fallbacks != 1 else ''}")
    lags = sorted(bar.lag for bar in timeline.bars if bar.lag is not None)
    if lags:
        parts.append(f"lag median {lags[len(lags) // 2]:.2f} s, max {lags[-1]:.2f} s")
    return " · ".join(parts)


def tooltip(bar: Bar, origin: float) -> str:
    """What hovering a bar tells: the node, its status, thread, times, rows and dbt's message."""
    node = bar.node
    lines = [
        f"{node.name} ({node.resource_type})",
        f"{node.status.value}" + (f" (dbt: {node.dbt_status})" if node.dbt_status else "") + f", by {node.resolved_by}",
        f"thread {node.thread or '?'}; start +{bar.start - origin:.2f} s, took {bar.end - bar.start:.2f} s"
        + (f", lag {bar.lag:.2f} s" if bar.lag is not None else ""),
    ]
    if node.rows_affected is not None:
        lines.append(f"{node.rows_affected:,} rows")
    if bar.critical:
        lines.append("on the critical path")
    if node.message:
        lines.append(node.message.strip())
    return "\n".join(lines)


# -- HTML --------------------------------------------------------------------------------
_GUTTER, _PLOT, _RIGHT, _TOP, _LANE, _BAR = 150, 1000, 24, 30, 32, 20

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #222; margin: 24px auto; max-width: 1220px; padding: 0 16px; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
.state { display: inline-block; padding: 1px 9px; border-radius: 10px; color: #fff; font-size: 13px;
         vertical-align: 2px; }
.sub { color: #555; margin: 0 0 14px; } .error { color: #c62828; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 20px; margin: 8px 0 10px; font-size: 13px; color: #333; }
.legend span { display: inline-flex; align-items: center; gap: 6px; }
.swatch { width: 22px; height: 12px; border-radius: 2px; display: inline-block; }
svg { width: 100%; height: auto; background: #fff; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
.lane-label { font-size: 12px; fill: #333; } .tick { font-size: 11px; fill: #666; }
.bar rect.body { stroke: #fff; stroke-width: 0.6; } .bar:hover rect.body { opacity: 0.8; }
.bar.critical rect.body { stroke: #1a1a1a; stroke-width: 2.2; }
.bar text { font-size: 11px; fill: #fff; pointer-events: none; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e3e3e3; vertical-align: top; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.name { word-break: break-all; } tr.critical td.name { font-weight: 600; }
tr.failed td { background: #fdecea; } pre { margin: 0; white-space: pre-wrap; word-break: break-word;
  font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; color: #8e1c1c; }
"""


def render_html(timeline: Timeline) -> str:
    """The whole report as one HTML document (no scripts, nothing fetched from elsewhere)."""
    status = timeline.status
    colour = STATE_COLOURS.get(status.state, "#607d8b")
    error = f'<p class="error">{_e(status.error)}</p>' if status.error else ""
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>dbt-celery run {_e(status.run_id)}</title><style>{_CSS}</style></head><body>",
            f'<h1>dbt-celery run {_e(status.run_id)} <span class="state" style="background:{colour}">'
            f"{_e(status.state)}</span></h1>",
            f'<p class="sub">{_e(headline(timeline))}</p>{error}',
            _legend_html(),
            _svg(timeline),
            _problems_html(timeline),
            _nodes_html(timeline),
            "</body></html>",
        ]
    )


def write_html(timeline: Timeline, path: str | Path) -> Path:
    """Write :func:`render_html` to ``path``; return it."""
    target = Path(path)
    target.write_text(render_html(timeline), encoding="utf-8")
    return target


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _legend_html() -> str:
    items = [f'<span><i class="swatch" style="background:{c}"></i>{_e(text)}</span>' for c, text in KINDS.values()]
    items.append(
        f'<span><i class="swatch" style="height:3px;background:{LAG_COLOUR}"></i>'
        "lag: dbt finished → consumer recorded</span>"
    )
    items.append(
        f'<span><i class="swatch" style="border:2px solid {CRITICAL_COLOUR};background:#fff"></i>critical path</span>'
    )
    return f'<div class="legend">{"".join(items)}</div>'


def _svg(timeline: Timeline) -> str:
    if not timeline.bars:
        return '<p class="sub">No node was built, so there is nothing to draw.</p>'
    scale = _PLOT / max(timeline.span, 1e-3)
    lane_y = {lane: _TOP + i * _LANE for i, lane in enumerate(timeline.lanes)}
    height = _TOP + len(timeline.lanes) * _LANE + 8
    width = _GUTTER + _PLOT + _RIGHT
    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="timeline of the run">']
    for i, lane in enumerate(timeline.lanes):
        y = lane_y[lane]
        parts.append(f'<rect x="0" y="{y}" width="{width}" height="{_LANE}" fill="{"#f7f7f7" if i % 2 else "#fff"}"/>')
        parts.append(f'<text class="lane-label" x="8" y="{y + _LANE / 2 + 4}">{_e(lane)}</text>')
    parts.extend(_ticks_svg(timeline.span, scale, height))
    parts.append(_critical_links_svg(timeline, scale, lane_y))
    parts.extend(_bar_svg(bar, timeline.origin, scale, lane_y[bar.lane]) for bar in timeline.bars)
    parts.append("</svg>")
    return "\n".join(parts)


def _ticks_svg(span: float, scale: float, height: int) -> list[str]:
    step = nice_step(span)
    parts = []
    for i in range(int(span / step) + 1):
        x = _GUTTER + i * step * scale
        parts.append(f'<line x1="{x:.1f}" y1="{_TOP - 6}" x2="{x:.1f}" y2="{height - 8}" stroke="#e0e0e0"/>')
        parts.append(f'<text class="tick" x="{x:.1f}" y="{_TOP - 10}" text-anchor="middle">{_seconds(i * step)}</text>')
    return parts


def nice_step(span: float, ticks: int = 10) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) giving at most about ``ticks`` ticks."""
    raw = max(span, 1e-3) / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _seconds(value: float) -> str:
    return f"{value:g} s" if value < 120 else f"{value / 60:g} min"


def _bar_svg(bar: Bar, origin: float, scale: float, lane_y: float) -> str:
    x = _GUTTER + (bar.start - origin) * scale
    width = max((bar.end - bar.start) * scale, 2.0)
    y = lane_y + (_LANE - _BAR) / 2
    classes = " ".join(["bar", bar.kind, *(["critical"] if bar.critical else [])])
    parts = [
        f'<g class="{classes}" data-node="{_e(bar.node.unique_id)}" data-lane="{_e(bar.lane)}">',
        f"<title>{_e(tooltip(bar, origin))}</title>",
        f'<rect class="body" x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{_BAR}" rx="2" '
        f'fill="{KINDS[bar.kind][0]}"/>',
    ]
    if bar.lag:
        tail = bar.lag * scale
        mid = y + _BAR / 2
        parts.append(
            f'<line class="lag" x1="{x + width:.1f}" y1="{mid:.1f}" x2="{x + width + tail:.1f}" y2="{mid:.1f}" '
            f'stroke="{LAG_COLOUR}" stroke-width="2"/>'
            f'<line x1="{x + width + tail:.1f}" y1="{mid - 4:.1f}" x2="{x + width + tail:.1f}" y2="{mid + 4:.1f}" '
            f'stroke="{LAG_COLOUR}" stroke-width="1.5"/>'
        )
    label = fitted_label(bar.node.name, width - 8, 6.0)
    if label:
        parts.append(f'<text x="{x + 4:.1f}" y="{y + _BAR / 2 + 4:.1f}">{_e(label)}</text>')
    parts.append("</g>")
    return "".join(parts)


def _critical_links_svg(timeline: Timeline, scale: float, lane_y: Mapping[str, float]) -> str:
    bars = {bar.node.unique_id: bar for bar in timeline.bars}
    path = [bars[uid] for uid in timeline.critical if uid in bars]
    mid = (_LANE) / 2
    segments = []
    for before, after in zip(path, path[1:]):
        x1 = _GUTTER + (before.end - timeline.origin) * scale
        x2 = _GUTTER + (after.start - timeline.origin) * scale
        segments.append(f"M{x1:.1f},{lane_y[before.lane] + mid:.1f} L{max(x1, x2):.1f},{lane_y[after.lane] + mid:.1f}")
    if not segments:
        return ""
    return (
        f'<path class="critical-link" d="{" ".join(segments)}" fill="none" stroke="{CRITICAL_COLOUR}" '
        'stroke-width="1.4" stroke-dasharray="4 3"/>'
    )


def fitted_label(text: str, room: float, char_width: float) -> str:
    """``text``, cut with an ellipsis to fit ``room`` units at ``char_width`` a character ('' if nothing fits)."""
    fits = int(room / char_width)
    if fits >= len(text):
        return text
    return text[: fits - 1] + "…" if fits >= 5 else ""


def _problems_html(timeline: Timeline) -> str:
    problems = sorted(
        (node for node in timeline.status.nodes.values() if node.status in _PROBLEMS),
        key=lambda node: (node.status not in _FAILED, node.name),
    )
    if not problems:
        return ""
    rows = "".join(
        f'<tr class="{"failed" if node.status in _FAILED else ""}"><td class="name" title="{_e(node.unique_id)}">'
        f"{_e(node.name)}</td><td>{_e(node.status.value)}</td><td>{_e(node.resolved_by or '')}</td>"
        f"<td><pre>{_e((node.message or node.reason or '').strip())}</pre></td></tr>"
        for node in problems
    )
    return (
        f"<h2>Failures ({sum(1 for n in problems if n.status in _FAILED)}) and nodes not built</h2>"
        f"<table><tr><th>node</th><th>status</th><th>by</th><th>message</th></tr>{rows}</table>"
    )


def _nodes_html(timeline: Timeline) -> str:
    bars = {bar.node.unique_id: bar for bar in timeline.bars}
    ordered = sorted(
        timeline.status.nodes.values(),
        key=lambda node: (node.unique_id not in bars, bars[node.unique_id].start if node.unique_id in bars else 0.0),
    )
    rows = "".join(_node_row(node, bars.get(node.unique_id), timeline.origin) for node in ordered)
    header = "".join(
        f"<th>{name}</th>"
        for name in ("node", "type", "status", "by", "thread", "start", "seconds", "lag", "rows", "critical")
    )
    return f"<h2>Nodes ({len(ordered)})</h2><table><tr>{header}</tr>{rows}</table>"


def _node_row(node: NodeStatus, bar: Bar | None, origin: float) -> str:
    def num(value: float | None, digits: int = 2) -> str:
        return f'<td class="num">{"" if value is None else f"{value:.{digits}f}"}</td>'

    classes = " ".join(
        [*(["critical"] if bar and bar.critical else []), *(["failed"] if node.status in _FAILED else [])]
    )
    rows = "" if node.rows_affected is None else f"{node.rows_affected:,}"
    return (
        f'<tr class="{classes}" data-node="{_e(node.unique_id)}"><td class="name" title="{_e(node.unique_id)}">'
        f"{_e(node.name)}</td><td>{_e(node.resource_type)}</td><td>{_e(node.status.value)}</td>"
        f"<td>{_e(node.resolved_by or '')}</td><td>{_e(node.thread or '')}</td>"
        + num(bar.start - origin if bar else None)
        + num(bar.end - bar.start if bar else node.execution_time)
        + num(bar.lag if bar else None)
        + f'<td class="num">{rows}</td><td>{"★" if bar and bar.critical else ""}</td></tr>'
    )


# -- PNG ---------------------------------------------------------------------------------
_PNG_LABEL_SIZE = 7.5


def require_matplotlib() -> None:
    """Fail with one clear line when matplotlib (the ``report`` extra) is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "--png needs matplotlib: pip install 'dbt-celery[report]' (or leave --png out for the HTML alone)"
        ) from None


def write_png(timeline: Timeline, path: str | Path, *, dpi: int = 130) -> Path:
    """Draw the timeline with matplotlib (no pyplot, no display) into a PNG at ``path``; return it."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lanes = timeline.lanes or ["(nothing built)"]
    problems = _png_problem_lines(timeline)
    height = 1.9 + 0.42 * len(lanes) + 0.2 * len(problems)
    figure = Figure(figsize=(13, height), dpi=dpi)
    FigureCanvasAgg(figure)
    # Inches kept free: title and legend above the chart, the time axis and failures below it.
    top, bottom = 1.05, 0.5 + 0.2 * len(problems)
    axes = figure.add_axes((0.13, bottom / height, 0.85, 1 - (top + bottom) / height))
    _draw_png_bars(axes, timeline, lanes)
    _draw_png_frame(figure, axes, timeline, lanes, problems)
    target = Path(path)
    figure.savefig(target, dpi=dpi, facecolor="white")
    return target


def _draw_png_bars(axes: Any, timeline: Timeline, lanes: list[str]) -> None:
    origin, row = timeline.origin, {lane: i for i, lane in enumerate(lanes)}
    span = max(timeline.span, 1e-3)
    width_px = axes.get_position().width * axes.figure.get_figwidth() * axes.figure.dpi
    char_px = _char_width(axes, _PNG_LABEL_SIZE)
    bars = {bar.node.unique_id: bar for bar in timeline.bars}
    path = [bars[uid] for uid in timeline.critical if uid in bars]
    for i in range(1, len(lanes), 2):
        axes.axhspan(i - 0.5, i + 0.5, color="#f4f4f4", zorder=0, linewidth=0)
    for before, after in zip(path, path[1:]):
        axes.plot(
            [before.end - origin, max(before.end, after.start) - origin],
            [row[before.lane], row[after.lane]],
            color=CRITICAL_COLOUR, linewidth=1.0, linestyle=(0, (3, 2)), zorder=2,
        )  # fmt: skip
    for bar in timeline.bars:
        y, start, length = row[bar.lane], bar.start - origin, max(bar.end - bar.start, span / 800)
        axes.barh(
            y, length, left=start, height=0.62, color=KINDS[bar.kind][0],
            edgecolor=CRITICAL_COLOUR if bar.critical else "white",
            linewidth=1.6 if bar.critical else 0.5, zorder=3,
        )  # fmt: skip
        if bar.lag:
            axes.plot([start + length, start + length + bar.lag], [y, y], color=LAG_COLOUR, linewidth=1.3, zorder=2)
            axes.plot([start + length + bar.lag] * 2, [y - 0.14, y + 0.14], color=LAG_COLOUR, linewidth=1.1, zorder=2)
        label = fitted_label(bar.node.name, length / span * width_px - 8, char_px)
        if label:
            axes.text(
                start + span * 3 / width_px, y, label, va="center_baseline", ha="left",
                fontsize=_PNG_LABEL_SIZE, color="white", zorder=4,
            )  # fmt: skip


def _char_width(axes: Any, size: float) -> float:
    """The mean width in pixels of one character of a node name, measured in the figure's font."""
    sample = "abcdefghijklmnopqrstuvwxyz_"
    probe = axes.text(0, 0, sample, fontsize=size)
    width = probe.get_window_extent(axes.figure.canvas.get_renderer()).width
    probe.remove()
    return width / len(sample) * 1.08  # names run wider than the alphabet's mean (m, w, _)


def _draw_png_frame(figure: Any, axes: Any, timeline: Timeline, lanes: list[str], problems: list[str]) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    status = timeline.status
    axes.set_yticks(range(len(lanes)), labels=lanes, fontsize=9)
    axes.set_ylim(len(lanes) - 0.5, -0.5)
    axes.set_xlim(0, max(timeline.span, 1e-3) * 1.01)
    axes.xaxis.set_major_formatter(lambda value, _: _seconds(round(value, 6)))
    axes.tick_params(axis="x", labelsize=8.5, colors="#555")
    axes.grid(axis="x", color="#e3e3e3", linewidth=0.8, zorder=0)
    axes.set_axisbelow(True)
    for side in ("top", "right", "left"):
        axes.spines[side].set_visible(False)
    height = figure.get_figheight()
    colour = STATE_COLOURS.get(status.state, "#607d8b")
    title = figure.text(0.013, 1 - 0.3 / height, f"dbt-celery run {status.run_id}", fontsize=12.5, weight="bold")
    after = title.get_window_extent(figure.canvas.get_renderer()).x1 / figure.bbox.width
    figure.text(
        after + 0.008, 1 - 0.3 / height, f" {status.state} ", fontsize=11, weight="bold", color="white",
        bbox={"boxstyle": "round,pad=0.25", "facecolor": colour, "edgecolor": "none"},
    )  # fmt: skip
    figure.text(0.013, 1 - 0.58 / height, headline(timeline), fontsize=9, color="#444")
    handles: list[Any] = [Patch(color=c, label=text) for c, text in KINDS.values()]
    handles.append(Patch(facecolor="white", edgecolor=CRITICAL_COLOUR, linewidth=1.6, label="critical path"))
    handles.append(Line2D([], [], color=LAG_COLOUR, linewidth=1.3, label="lag: dbt finished → consumer recorded"))
    axes.legend(
        handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=6, fontsize=8, frameon=False,
        handlelength=1.6, columnspacing=1.4, borderaxespad=0.3,
    )  # fmt: skip
    for i, line in enumerate(problems):
        figure.text(0.013, (0.12 + 0.2 * (len(problems) - 1 - i)) / height, line, fontsize=8, color="#b71c1c")


def _png_problem_lines(timeline: Timeline, limit: int = 6) -> list[str]:
    failed = [node for node in timeline.status.nodes.values() if node.status in _FAILED]
    lines = []
    for node in sorted(failed, key=lambda node: node.name)[:limit]:
        first = (node.message or node.reason or "").strip().splitlines()
        lines.append(f"✗ {node.name}: {first[0][:150] if first else node.status.value}")
    if len(failed) > limit:
        lines.append(f"… and {len(failed) - limit} more failures (see the HTML report)")
    return lines
