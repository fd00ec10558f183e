"""The report's PNG charts: R1/R2 per case, the wake-up lag distribution, and how the costs grow with N."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.measure import percentile

MB = 1024 * 1024
#: One colour per profile, the same in every chart.
COLOURS = {"light": "#4c72b0", "heavy": "#dd8452", "views": "#55a868", "embedded": "#8172b3"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_charts(results: dict[str, Any], out: Path) -> list[Path]:
    """Write every chart the results allow; return their paths."""
    cases = ordered_cases(results)
    written = [draw_ratios(results, cases, out / "benchmarks_ratios.png")]
    if cases:
        written += [draw_lag(cases, out / "benchmarks_lag.png"), draw_scale(cases, out / "benchmarks_scale.png")]
    return written


def ordered_cases(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The measured cases as (key, data), by profile then size."""
    order = {name: index for index, name in enumerate(COLOURS)}
    return sorted(
        results.get("cases", {}).items(), key=lambda item: (order.get(item[1]["profile"], 9), item[1]["models"])
    )


def draw_ratios(results: dict[str, Any], cases: list[tuple[str, dict[str, Any]]], path: Path) -> Path:
    """R1 of every case (and the embedded comparison), and R2 where the naive baseline was timed."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4), gridspec_kw={"width_ratios": [3, 1]})
    labels = [key.replace("/", " ") for key, _ in cases]
    values = [data["summary"]["r1"] for _, data in cases]
    colours = [COLOURS[data["profile"]] for _, data in cases]
    embedded = (results.get("embedded") or {}).get("summary")
    if embedded:
        for step in ("first", "second"):
            labels.append(f"embedded\n{step} run")
            values.append(embedded[step]["ratio"])
            colours.append(COLOURS["embedded"])
    left.bar(labels, values, color=colours)
    left.axhline(1.05, color="#c44e52", linestyle="--", label="R1 target ≤ 1.05 (light 200, 1,000)")
    if embedded:
        left.axhline(1.3, color="#8172b3", linestyle=":", label="embedded target ≤ 1.3")
    left.axhline(1.0, color="grey", linewidth=0.8)
    for x, value in enumerate(values):
        left.annotate(f"{value:.2f}", (x, value), ha="center", va="bottom")
    left.set_title("dbt-celery / plain dbt build (median of A/B pairs)", fontsize=11)
    left.set_ylim(0, max(values + [1.3]) * 1.2)
    left.set_ylabel("ratio (lower is better)")
    left.tick_params(axis="x", labelsize=8)
    left.legend(loc="upper left", fontsize=8)
    naive = [(key.replace("/", " "), data["summary"]["r2"]) for key, data in cases if "r2" in data["summary"]]
    if naive:
        right.bar([k for k, _ in naive], [v for _, v in naive], color=COLOURS["heavy"])
        for x, (_, value) in enumerate(naive):
            right.annotate(f"{value:.0f}×", (x, value), ha="center", va="bottom")
        right.set_ylim(0, max([v for _, v in naive] + [15]) * 1.25)
    else:
        right.set_ylim(0, 20)
        right.text(0.5, 0.5, "not measured", ha="center", va="center", transform=right.transAxes, color="grey")
        right.set_xticks([])
    right.axhline(15, color="#c44e52", linestyle="--", label="target ≥ 15 (heavy 200)")
    right.set_title("R2: naive / dbt-celery\n(naive extrapolated from a sample)", fontsize=10)
    right.set_ylabel("ratio (higher is better)")
    right.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_lag(cases: list[tuple[str, dict[str, Any]]], path: Path) -> Path:
    """Histogram of the wake-up lag per node, one line per case."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(8, 4))
    all_lags = [lag for _, data in cases for m in data["celery"] for lag in m["lags"]]
    top = min(max(all_lags + [1.2]), 10.0)
    bins = [top * i / 40 for i in range(41)]
    for key, data in cases:
        lags = [min(lag, top) for m in data["celery"] for lag in m["lags"]]
        if lags:
            label = f"{key.replace('/', ' ')} (p95 {percentile(lags, 0.95):.2f} s)"
            axis.hist(lags, bins=bins, histtype="step", linewidth=1.5, label=label, density=True)
    axis.axvline(0.5, color="#c44e52", linestyle="--", label="p95 target 0.5 s")
    axis.set_title("Wake-up lag per node (consumer outcome − dbt node finished)", fontsize=11)
    axis.set_xlabel(f"seconds (longer lags counted at {top:g} s)")
    axis.set_ylabel("share of nodes (density)")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


#: The scale chart's panels: (title, function of a case summary, target line or None).
PANELS: list[tuple[str, Any, float | None]] = [
    ("R1 dbt-celery / dbt build", lambda s: s["r1"], 1.05),
    ("consumer executions per node: in the run ●, in all ■", "executions", 1.5),
    ("Redis commands per node", lambda s: s["redis_total_per_node"], None),
    ("consumer CPU / producer CPU", lambda s: s["consumer_cpu_share"], 0.10),
    ("wake-up lag p95 (s)", lambda s: s["lag_p95"], 0.5),
    ("peak RSS (MB): producer ●, consumer ■", None, 100.0),
]


def draw_scale(cases: list[tuple[str, dict[str, Any]]], path: Path) -> Path:
    """How R1, executions, Redis commands, consumer CPU, lag p95 and RSS grow with the number of nodes."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    profiles = sorted({data["profile"] for _, data in cases}, key=list(COLOURS).index)
    for axis, (title, value, target) in zip(axes.flat, PANELS):
        for profile in profiles:
            rows = sorted((d["nodes"], d["summary"]) for _, d in cases if d["profile"] == profile)
            nodes = [n for n, _ in rows]
            colour = COLOURS[profile]
            if value is None:
                axis.plot(nodes, [s["producer_peak_rss"] / MB for _, s in rows], "o-", color=colour, label=profile)
                axis.plot(nodes, [s["consumer_peak_rss"] / MB for _, s in rows], "s--", color=colour)
            elif value == "executions":
                axis.plot(nodes, [s["executions_per_node"] for _, s in rows], "o-", color=colour, label=profile)
                every = [(n, s["executions_all_per_node"]) for n, s in rows if s.get("executions_all_per_node")]
                axis.plot([n for n, _ in every], [v for _, v in every], "s--", color=colour)
            else:
                points = [(n, v) for n, s in rows if (v := value(s)) is not None]
                axis.plot([n for n, _ in points], [v for _, v in points], "o-", color=colour, label=profile)
        if target is not None:
            axis.axhline(target, color="#c44e52", linestyle="--", linewidth=1)
        axis.set_title(title, fontsize=10)
        axis.set_xscale("log")
        axis.set_xlabel("nodes")
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("dbt-celery costs by project size (dashed red: target)", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
