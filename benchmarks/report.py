"""Turn the raw results into ratios, targets, ``docs/benchmarks.md`` and two PNG charts."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.measure import percentile
from benchmarks.recovery import recovery_ok, timeline_text

MB = 1024 * 1024

#: The targets, as (key, description); checked by :func:`targets`.
TARGETS = {
    "r1": "R1 dbt-celery / plain dbt build ≤ 1.05 (every size)",
    "r2": "R2 naive / dbt-celery ≥ 15 at 200 models",
    "r3": "R3 wake-up lag p95 ≤ 1 s (every size)",
    "r4_plan": "R4 plan + enqueue of 10,000 nodes ≤ 3 s",
    "r4_writes": "R4 10,000 node-event writes ≤ 2 s",
    "rss": "consumer worker RSS ≤ 100 MB, dbt never imported there",
    "recovery": "recovery: producer SIGKILLed at 50% of nodes / undisturbed run ≤ 1.5",
}


# -- summary ----------------------------------------------------------------------------------
def summarize_size(data: dict[str, Any]) -> dict[str, Any]:
    """The ratios and statistics of one project size."""
    cli = [m["wall"] for m in data["cli"]]
    celery = [m["wall"] for m in data["celery"]]
    lags = [lag for m in data["celery"] for lag in m["lags"]]
    naive = data.get("naive")
    summary: dict[str, Any] = {
        "models": data["models"],
        "nodes": data["nodes"],
        "cli_median": statistics.median(cli),
        "celery_median": statistics.median(celery),
        "r1": statistics.median(celery) / statistics.median(cli),
        "r1_pairs": [c["wall"] / b["wall"] for c, b in zip(data["celery"], data["cli"])],
        "lag_p50": percentile(lags, 0.5) if lags else None,
        "lag_p95": percentile(lags, 0.95) if lags else None,
        "lag_max": max(lags) if lags else None,
        "lag_count": len(lags),
        "executions_per_node": statistics.fmean(m["executions_per_node"] for m in data["celery"]),
        "worker_reads_per_node": statistics.fmean(m["redis"]["worker_reads_per_node"] for m in data["celery"]),
        "redis_per_node": {
            name: statistics.fmean(m["redis"]["per_node"][name] for m in data["celery"])
            for name in data["celery"][0]["redis"]["per_node"]
        },
        "redis_total_per_node": statistics.fmean(m["redis"]["total_per_node"] for m in data["celery"]),
        "redis_kb_per_node": statistics.fmean(
            m["redis"]["kb_in_per_node"] + m["redis"]["kb_out_per_node"] for m in data["celery"]
        ),
        "consumer_rss_after": data["celery"][-1]["consumer_rss"],
        "phases": {
            name: statistics.median(m["phases"][name] for m in data["celery"]) for name in data["celery"][0]["phases"]
        },
        "cli_before_first_node": statistics.median(m["before_first_node"] for m in data["cli"]),
        "cli_nodes_span": statistics.median(m["nodes_span"] for m in data["cli"]),
        "cpu": {
            "cli": statistics.median(m["cpu"] for m in data["cli"]),
            **{k: statistics.median(m["cpu"][k] for m in data["celery"]) for k in data["celery"][0]["cpu"]},
        },
    }
    alone = data.get("producer_alone")
    if alone:
        summary["alone"] = alone
        summary["r1_without_consumers"] = alone["to_producer_finished"] / summary["cli_median"]
    spans = [m["dbt_nodes_span"] for m in data["celery"] if m.get("dbt_nodes_span") is not None]
    summary["celery_dbt_span"] = statistics.median(spans) if spans else None
    summary["plan"] = data["celery"][-1].get("plan")
    summary["depends_on_edges"] = data.get("depends_on_edges")
    if naive:
        summary["naive_per_node"] = naive["per_node"]
        summary["naive_total"] = naive["wall"] if naive["full"] else naive["per_node"] * data["nodes"]
        summary["naive_sampled"] = not naive["full"]
        summary["naive_nodes_timed"] = naive["nodes_timed"]
        summary["r2"] = summary["naive_total"] / summary["celery_median"]
    return summary


def targets(results: dict[str, Any]) -> dict[str, tuple[bool | None, str]]:
    """Each target: met (None when not measured) and the value it was judged on."""
    sizes = {int(k): v["summary"] for k, v in results["sizes"].items()}
    out: dict[str, tuple[bool | None, str]] = {}
    r1 = {size: s["r1"] for size, s in sizes.items()}
    out["r1"] = (all(v <= 1.05 for v in r1.values()), ", ".join(f"{v:.2f} at {k}" for k, v in sorted(r1.items())))
    if 200 in sizes and "r2" in sizes[200]:
        value = sizes[200]["r2"]
        out["r2"] = (value >= 15, f"{value:.0f}× at 200" + (" (sampled)" if sizes[200]["naive_sampled"] else ""))
    else:
        out["r2"] = (None, "200 models not measured")
    p95 = {size: s["lag_p95"] for size, s in sizes.items() if s["lag_p95"] is not None}
    out["r3"] = (all(v <= 1.0 for v in p95.values()), ", ".join(f"{v:.2f} s at {k}" for k, v in sorted(p95.items())))
    big = max(results["scale"], key=lambda row: row["nodes"]) if results["scale"] else None
    if big and big["nodes"] >= 10_000:
        out["r4_plan"] = (big["plan_enqueue"] <= 3.0, f"{big['plan_enqueue']:.2f} s")
        out["r4_writes"] = (big["writes"] <= 2.0, f"{big['writes']:.2f} s")
    else:
        out["r4_plan"] = out["r4_writes"] = (None, "10,000 nodes not measured")
    probe = results["consumer_probe_end"]
    rss = max([probe["rss_bytes"]] + [s["consumer_rss_after"] for s in sizes.values()])
    out["rss"] = (
        rss <= 100 * MB and not probe["dbt_imported"],
        f"{rss / MB:.0f} MB, dbt {'imported' if probe['dbt_imported'] else 'not imported'}",
    )
    recovery = results.get("recovery")
    if recovery:
        out["recovery"] = (
            recovery["ratio"] <= recovery["target_ratio"] and recovery_ok(recovery),
            f"{recovery['ratio']:.2f} at {recovery['models']} models (generation {recovery['generation']}, "
            f"{recovery['fallbacks']} fallbacks)",
        )
    else:
        out["recovery"] = (None, "not measured (--recovery)")
    return out


def ratio_lines(size: int, summary: dict[str, Any]) -> list[str]:
    """What the harness prints once a size is done."""
    lines = [
        f"  R1 overhead   {size} models: dbt-celery {summary['celery_median']:.2f} s / dbt build "
        f"{summary['cli_median']:.2f} s = {summary['r1']:.3f}",
    ]
    if "r2" in summary:
        how = (
            f"SAMPLED: {summary['naive_nodes_timed']} nodes timed, {summary['naive_per_node']:.2f} s/node "
            f"x {summary['nodes']} nodes"
            if summary["naive_sampled"]
            else "full chain"
        )
        lines.append(
            f"  R2 naive      {size} models: naive {summary['naive_total']:.0f} s ({how}) / dbt-celery "
            f"{summary['celery_median']:.2f} s = {summary['r2']:.1f}"
        )
    if summary["lag_p50"] is not None:
        lines.append(
            f"  R3 lag        {size} models: p50 {summary['lag_p50']:.3f} s, p95 {summary['lag_p95']:.3f} s, "
            f"max {summary['lag_max']:.3f} s over {summary['lag_count']} nodes"
        )
    lines.append(
        f"  waiting cost  {size} models: {summary['executions_per_node']:.1f} consumer executions/node, "
        f"{summary['worker_reads_per_node']:.1f} worker backend reads/node, "
        f"consumer RSS {summary['consumer_rss_after'] / MB:.0f} MB"
    )
    return lines


# -- charts -----------------------------------------------------------------------------------
def draw_charts(results: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write the ratio chart and the lag histogram; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted((int(k), v) for k, v in results["sizes"].items())
    labels = [str(size) for size, _ in sizes]

    ratios_path = out / "benchmarks_ratios.png"
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    r1 = [v["summary"]["r1"] for _, v in sizes]
    left.bar(labels, r1, color="#4c72b0")
    left.axhline(1.05, color="#c44e52", linestyle="--", label="target ≤ 1.05")
    left.axhline(1.0, color="grey", linewidth=0.8)
    for x, value in enumerate(r1):
        left.annotate(f"{value:.2f}", (x, value), ha="center", va="bottom")
    left.set_title("R1: dbt-celery / plain dbt build", fontsize=11)
    left.set_ylim(0, max(r1 + [1.05]) * 1.2)
    left.set_xlabel("models")
    left.set_ylabel("ratio (lower is better)")
    left.legend(loc="upper left")
    r2 = [v["summary"].get("r2", 0.0) for _, v in sizes]
    sampled = any(v["summary"].get("naive_sampled") for _, v in sizes)
    right.bar(labels, r2, color="#55a868")
    right.axhline(15, color="#c44e52", linestyle="--", label="target ≥ 15 (at 200)")
    for x, value in enumerate(r2):
        right.annotate(f"{value:.0f}×", (x, value), ha="center", va="bottom")
    right.set_title(
        "R2: naive (one dbt process per node) / dbt-celery"
        + ("\n(naive extrapolated from a sample)" if sampled else ""),
        fontsize=11,
    )
    right.set_ylim(0, max(r2 + [15]) * 1.25)
    right.set_xlabel("models")
    right.set_ylabel("ratio (higher is better)")
    right.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(ratios_path, dpi=110)
    plt.close(fig)

    lag_path = out / "benchmarks_lag.png"
    fig, axis = plt.subplots(figsize=(8, 4))
    all_lags = [lag for _, v in sizes for m in v["celery"] for lag in m["lags"]]
    top = max(all_lags + [1.2])
    bins = [top * i / 40 for i in range(41)]
    for size, v in sizes:
        lags = [lag for m in v["celery"] for lag in m["lags"]]
        if lags:
            axis.hist(
                lags,
                bins=bins,
                histtype="step",
                linewidth=1.6,
                label=f"{size} models (p95 {percentile(lags, 0.95):.2f} s)",
            )
    axis.axvline(1.0, color="#c44e52", linestyle="--", label="p95 target 1 s")
    axis.set_title("R3: wake-up lag per node (consumer terminal − dbt node finished)")
    axis.set_xlabel("seconds")
    axis.set_ylabel("nodes")
    axis.legend()
    fig.tight_layout()
    fig.savefig(lag_path, dpi=110)
    plt.close(fig)
    return ratios_path, lag_path


def _commands(row: dict[str, Any]) -> str:
    counts = row.get("write_commands") or {}
    return ", ".join(f"{value:.1f} {name.upper()}" for name, value in counts.items() if value >= 0.05) or "–"


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _alone(summary: dict[str, Any]) -> str:
    alone = summary.get("alone")
    if not alone:
        return "–"
    return f"{alone['dbt_nodes_span']:.2f} / {alone['to_producer_finished']:.2f}"


def miss_notes(results: dict[str, Any], met: dict[str, tuple[bool | None, str]]) -> list[str]:
    """Bullet points explaining each missed target from this run's own numbers."""
    sizes = sorted((int(k), v["summary"]) for k, v in results["sizes"].items())
    cpus = results["machine"]["nproc"]
    notes: list[str] = []
    if met["r1"][0] is False or met["r3"][0] is False:
        for size, s in sizes:
            if s["r1"] <= 1.05 and (s["lag_p95"] or 0) <= 1.0:
                continue
            alone = s.get("alone") or {}
            busy = s["cpu"]["consumer"] / (s["celery_median"] * cpus) * 100
            text = (
                f"- **{size} models, R1 {s['r1']:.2f}, lag p95 {s['lag_p95']:.2f} s.** dbt's own node span was "
                f"{s['cli_nodes_span']:.1f} s in the plain CLI and {s['celery_dbt_span'] or float('nan'):.1f} s inside the "
                f"producer worker; with the consumer worker paused it was {alone.get('dbt_nodes_span', float('nan')):.1f} s, "
                f"and submit → producer finished took {alone.get('to_producer_finished', float('nan')):.1f} s, i.e. "
                f"{s.get('r1_without_consumers', float('nan')):.2f}× the CLI. The consumer worker burned "
                f"{s['cpu']['consumer']:.1f} CPU-s per run ({busy:.0f}% of this {cpus}-CPU machine over the run), the "
                f"producer {s['cpu']['producer']:.1f} and the observer {s['cpu']['observer']:.1f}: the consumers "
                f"compete with dbt for the CPUs, and starved consumers also wake up late (R3)."
            )
            notes.append(text)
        plans = [(size, s) for size, s in sizes if s.get("plan") and s.get("depends_on_edges")]
        detail = "; ".join(
            f"{size} models: {s['plan']['edges']:,} plan edges for {s['depends_on_edges']:,} `depends_on` edges, "
            f"up to {s['plan']['max_parents']} parents, {s['plan']['release_keys_per_node']:,.0f} outcome keys read per "
            f"released node"
            for size, s in plans
        )
        if any(s["plan"]["edges"] > 2 * s["depends_on_edges"] for _, s in plans):
            notes.append(
                "- Where the consumer CPU goes: **the plan's edges.** dbt's default `add_test_edges` links the "
                "tests of *every ancestor* to a node, and the plan keeps those edges; a passing consumer's "
                "`ready_children` reads, for each child, the outcomes of all that child's parents: "
                + detail
                + ". This grows roughly with N × depth²."
            )
        elif plans:
            notes.append(f"- The plan's edges are not the cost: {detail}.")
        detail = "; ".join(
            f"{size} models: {s['executions_per_node']:.1f} executions, {s['redis_total_per_node']:.0f} Redis "
            f"commands and {s['redis_kb_per_node']:.0f} KB of Redis traffic per node"
            for size, s in sizes
        )
        notes.append(
            "- Where the consumer CPU goes: **every poll is a Celery retry.** Each one makes Celery build a "
            "billiard `ExceptionInfo` (on Python ≥ 3.11 it copies `co_positions()` of every frame), read the task's "
            "state, store a RETRY state with the formatted traceback (MULTI/SETEX/PUBLISH/EXEC), publish the message "
            "again and send task events: " + detail + "."
        )
    if met["r4_writes"][0] is False:
        big = max(results["scale"], key=lambda row: row["nodes"])
        text = f"- **R4 writes {big['writes']:.2f} s for {big['nodes']:,} events** ({big['write_us']:.0f} µs each). "
        per_write = big.get("write_commands") or {}
        if per_write.get("multi", 0) >= 0.9:
            text += (
                f"Each write issued {per_write.get('multi', 0):.1f} MULTI and {per_write.get('publish', 0):.1f} PUBLISH: "
                "a single record goes through the Celery backend's `set()`, which wraps it in MULTI / SETEX / PUBLISH "
                f"/ EXEC and publishes it to a channel nobody reads. The same records as plain SETs took "
                f"{big['direct_writes']:.2f} s."
            )
        else:
            commands = ", ".join(f"{value:.1f} {name.upper()}" for name, value in per_write.items() if value >= 0.05)
            text += (
                f"Each write is one plain command ({commands} per write); the same records as direct SETs took "
                f"{big['direct_writes']:.2f} s: the time is one sequential Redis round trip per record on this shared, "
                "loaded machine. Batching (or a writer thread) would be the next step."
            )
        notes.append(text)
    if met["rss"][0] is False:
        start, end = results["consumer_probe_start"], results["consumer_probe_end"]
        notes.append(
            f"- **Consumer RSS {end['rss_bytes'] / MB:.0f} MB** (dbt {'imported' if end['dbt_imported'] else 'not imported'}). "
            f"It was {start['rss_bytes'] / MB:.0f} MB right after start: the `celery` command itself loads its CLI "
            "plugins (flower, tornado, prometheus_client, prompt_toolkit, pygments are in this environment). It "
            "grows once, during the first run, and then stays flat: the peak of transient allocations by the "
            "consumer threads handling retries (billiard copies every frame's `co_positions()` per retry) is kept by the "
            "allocator, not leaked."
        )
    return notes


def recovery_section(results: dict[str, Any]) -> list[str]:
    """The "Recovery" section: a run whose producer worker is SIGKILLed halfway, against an undisturbed one."""
    data = results.get("recovery")
    lines = ["## Recovery", ""]
    if not data:
        return [*lines, "Not measured in this run (`python -m benchmarks --recovery`).", ""]
    killed, resumed = data["killed"], data["resumed_build"]
    machine = results["machine"]
    lines += [
        f"Measured {results['started_at']} UTC on {machine['nproc']} CPUs ({machine['cpu_model']}), "
        f"`{results['command']}`.",
        "",
        f"On the generated {data['models']}-model project ({data['nodes']} nodes), two dbt-celery runs with "
        f"`RunSpec(heartbeat_timeout={data['heartbeat_timeout']:g})`, each on a fresh DuckDB file: one undisturbed, "
        f"and one whose producer worker's process group (the worker and its in-process dbt) is SIGKILLed once "
        f"{data['kill_fraction']:.0%} of the planned nodes have a record in the store (polled with "
        "`store.node_events`); a new producer worker is started at once. The run's consumers notice the "
        "expired lease and send a resumed producer (generation 2), which builds every node still unreported "
        "in one `dbt build --select ...`. Wall time is submit → `DbtRun.wait()` returning, as above.",
        "",
        "| undisturbed (s) | killed (s) | ratio (target ≤ "
        f"{data['target_ratio']:g}) | killed at | records at the kill | generation 2 started | generation finished "
        "| fallback nodes |",
        "|---|---|---|---|---|---|---|---|",
        f"| {data['undisturbed']['wall']:.2f} | {killed['wall']:.2f} | {data['ratio']:.2f} | {killed['killed_at']:.1f} s "
        f"| {killed['records_at_kill']} / {killed['planned']} "
        f"| {data['resume_delay'] or float('nan'):.1f} s after the kill | {data['generation']} | {data['fallbacks']} |",
        "",
    ]
    if data.get("timeline"):
        lines += [f"Where the time went: {timeline_text(data)}.", ""]
    if resumed.get("found"):
        lines += [
            f"The resumed producer's `run_results.json` (`producer-{data['generation']}/target/`) lists "
            f"{resumed['results']} results for {resumed['nodes']} nodes: "
            + (
                "each appears once"
                if not resumed["duplicates"]
                else f"**{len(resumed['duplicates'])} appear more than once**"
            )
            + ", "
            + (
                "none of them had a record before the kill"
                if not resumed["recorded_before_kill"]
                else f"**{len(resumed['recorded_before_kill'])} already had a record before the kill**"
            )
            + ", and "
            + (
                "every node left unrecorded at the kill was among them."
                if not resumed["not_rebuilt"]
                else f"**{len(resumed['not_rebuilt'])} nodes left unrecorded at the kill were not rebuilt**."
            ),
            "",
        ]
    else:
        lines += [f"**No `run_results.json` from the resumed producer** at `{resumed['path']}`.", ""]
    return lines


# -- markdown ---------------------------------------------------------------------------------
def write_markdown(results: dict[str, Any], out: Path) -> Path:
    """Write ``benchmarks.md`` (and the raw ``benchmarks.json`` beside it)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").write_text(json.dumps(results, indent=1, sort_keys=True, default=str))
    draw_charts(results, out)
    sizes = sorted((int(k), v) for k, v in results["sizes"].items())
    cfg = results["config"]
    machine, versions = results["machine"], results["versions"]
    met = targets(results)
    lines: list[str] = []
    add = lines.append

    add("# Benchmarks")
    add("")
    add("Generated by `python -m benchmarks` (module `benchmarks/`); do not edit by hand, run the command again.")
    add("")
    add(f"- command: `{results['command']}`")
    add(f"- date: {results['started_at']} UTC, harness wall time {results['duration'] / 60:.1f} min")
    add(
        f"- machine: {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['memory_gb']:.1f} GB RAM, "
        f"load average at start {machine['load_start']}, at end {machine.get('load_end', '?')} "
        "(the machine was shared with other work)"
    )
    add("- versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()))
    add(
        f"- settings: {cfg['threads']} dbt threads for both approaches, {cfg['rows']:,} rows per model "
        f"(`range()`), fan-in 1–5, {cfg['seeds']} seeds, {cfg['reps']} repetition(s) per size "
        f"(order alternated, medians reported), naive baseline "
        + ("run in full" if cfg["naive_full"] else f"sampled on {cfg['naive_sample']} nodes per size")
        + f", Redis DB {cfg['redis_db']} (R4: DB {cfg['scale_db']})"
    )
    add("")
    add("## Targets")
    add("")
    add("| target | result | met |")
    add("|---|---|---|")
    for key, text in TARGETS.items():
        ok, value = met[key]
        add(f"| {text} | {value} | {'n/a' if ok is None else ('yes' if ok else '**no**')} |")
    add("")
    add("## Results")
    add("")
    add(
        "| models | nodes | dbt build (s) | dbt-celery (s) | R1 | naive (s) | R2 | lag p50 / p95 / max (s) | executions / node | worker reads / node | consumer RSS |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|---|")
    for size, data in sizes:
        s = data["summary"]
        naive = f"{s['naive_total']:.0f}{' *' if s.get('naive_sampled') else ''}" if "r2" in s else "–"
        r2 = f"{s['r2']:.1f}" if "r2" in s else "–"
        lag = f"{s['lag_p50']:.2f} / {s['lag_p95']:.2f} / {s['lag_max']:.2f}" if s["lag_p50"] is not None else "–"
        add(
            f"| {size} | {s['nodes']} | {s['cli_median']:.2f} | {s['celery_median']:.2f} | {s['r1']:.3f} | {naive} | {r2} "
            f"| {lag} | {s['executions_per_node']:.1f} | {s['worker_reads_per_node']:.1f} | {s['consumer_rss_after'] / MB:.0f} MB |"
        )
    if any(d["summary"].get("naive_sampled") for _, d in sizes):
        add("")
        add(
            "\\* **Naive baseline extrapolated from a sample**: a chain of K `naive_build` tasks (one new "
            "`dbt build --select <node> --indirect-selection empty` process each, on the producer worker) over "
            "K nodes spread evenly along the topological order, run on the database a full run had just built; "
            "naive total = (chain wall time / K) × all nodes. Celery hops are included in the per-node time."
        )
        for size, data in sizes:
            s = data["summary"]
            if s.get("naive_sampled"):
                add(
                    f"  {size} models: {s['naive_nodes_timed']} nodes timed, {s['naive_per_node']:.2f} s per node "
                    f"(dbt process alone {data['naive']['dbt_process_mean']:.2f} s) × {s['nodes']} nodes."
                )
    add("")
    add("Per repetition (wall seconds, ratio of the pair):")
    add("")
    for size, data in sizes:
        pairs = ", ".join(
            f"{c['wall']:.2f}/{b['wall']:.2f}={c['wall'] / b['wall']:.2f}" for c, b in zip(data["celery"], data["cli"])
        )
        add(f"- {size} models, dbt-celery/dbt build: {pairs}")
    add("")
    add("![R1 and R2 by project size](benchmarks_ratios.png)")
    add("")
    add("![wake-up lag distribution](benchmarks_lag.png)")
    add("")
    add("## Where the time goes (medians)")
    add("")
    add(
        "dbt-celery: `queue` submit → producer task starts; `plan_and_start` producer start → first dbt node "
        "starts (dbt parse with partial parsing, `dbt ls`, plan written, roots enqueued, build starting); "
        "`nodes_span` first node start → last node finish; `producer_finish` last node → producer state "
        "finished; `tail` producer finished → last consumer terminal (negative when the last consumer ended before the producer's own wrap-up); `observer` last consumer → `wait()` returns "
        f"(status read every {results['config']['wait_interval']} s). Plain dbt build: `before_first_node` "
        "process start → first node starts (interpreter, dbt import, parse); `nodes_span` as above."
    )
    add("")
    add(
        "| models | dbt build: before first node | dbt build: nodes span | celery: queue | plan_and_start | nodes_span "
        "| producer_finish | tail | observer | consumers paused: nodes span / submit → producer done "
        "| CPU s: dbt build / producer / consumer / observer |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|---|")
    for size, data in sizes:
        s = data["summary"]
        p = s["phases"]
        cpu = s["cpu"]
        add(
            f"| {size} | {s['cli_before_first_node']:.2f} | {s['cli_nodes_span']:.2f} | {p['queue']:.2f} | {p['plan_and_start']:.2f} "
            f"| {p['nodes_span']:.2f} | {p['producer_finish']:.2f} | {p['tail']:.2f} | {p['observer']:.2f} "
            f"| {_alone(s)} | {cpu['cli']:.1f} / {cpu['producer']:.1f} / {cpu['consumer']:.1f} / {cpu['observer']:.1f} |"
        )
    add("")
    add(
        "`consumers paused` is a diagnostic run per size (not in the ratios): the consumer worker is frozen "
        "(SIGSTOP) from submit until the producer reports finished, then let go so the run completes. It shows "
        "the producer's cost with nothing competing for the CPUs."
    )
    add("")
    add("## Why targets were missed")
    add("")
    notes = miss_notes(results, met)
    lines.extend(notes or ["Every target was met."])
    add("")
    add("## Cost of waiting")
    add("")
    probe = results["consumer_probe_end"]
    start_probe = results["consumer_probe_start"]
    add(
        f"- Consumer worker (`-P threads -c 4`) RSS: {start_probe['rss_bytes'] / MB:.0f} MB after start, "
        f"{probe['rss_bytes'] / MB:.0f} MB after all runs (peak {probe['max_rss_bytes'] / MB:.0f} MB); "
        f"dbt imported there: {'**yes**' if probe['dbt_imported'] else 'no'} "
        f"({probe['modules']} modules loaded; third-party packages: "
        f"{', '.join(name for name in probe['packages'] if not name.startswith('_'))})."
    )
    producer_probe = results["producer_probe_end"]
    add(
        f"- Producer worker (`-P solo`, dbt preloaded) RSS after all runs: {producer_probe['rss_bytes'] / MB:.0f} MB "
        f"(peak {producer_probe['max_rss_bytes'] / MB:.0f} MB)."
    )
    add(
        f"- Redis commands while idle (worker heartbeats, blocking pops, other tenants): "
        f"{results['idle_commands_per_second']:.1f}/s, not subtracted below."
    )
    add(
        "- Executions per node = 1 + polls + retries from each consumer's outcome record (each execution is one "
        "broker message delivered). Redis calls are `INFO commandstats` deltas over the run (server-wide), per "
        "node; worker reads = MGET+GET minus the reads this process made through `DbtRun.wait()`."
    )
    add("")
    names = list(sizes[0][1]["summary"]["redis_per_node"]) if sizes else []
    add(
        "| models | executions / node | worker reads / node | "
        + " | ".join(n.upper() for n in names)
        + " | all commands | Redis traffic |"
    )
    add("|---|---|---|" + "---|" * len(names) + "---|---|")
    for size, data in sizes:
        s = data["summary"]
        cells = " | ".join(f"{s['redis_per_node'][n]:.1f}" for n in names)
        add(
            f"| {size} | {s['executions_per_node']:.1f} | {s['worker_reads_per_node']:.1f} | {cells} "
            f"| {s['redis_total_per_node']:.0f} | {s['redis_kb_per_node']:.0f} KB |"
        )
    add("")
    add("## R4: scale without dbt")
    add("")
    add(
        "A synthetic `ProjectGraph` (half models in layers with 1–5 parents plus test edges, half `not_null` "
        "tests), no dbt: `RunPlan(run_id, dict(graph.nodes)).save(store)` then the root consumers enqueued "
        "with the library's own `enqueue(app, run_id, plan.nodes, roots)` (claim + `apply_async`) on a Redis "
        "queue no worker reads (deleted after); then one `store.put_events(run_id, [event])` per node, "
        "sequentially, as the producer writes them. `fenced` is the same records written as the producer "
        "really does, each one fenced by the run's lease (`store.put_events(run_id, [event], lease)`, one "
        "Lua `EVALSHA` comparing the lease); `direct SET` is the same encoded records written with one plain "
        "Redis `SET` each, for comparison (the floor for one round trip per record)."
    )
    add("")
    add(
        "| nodes | roots | plan save (s) | enqueue roots (s) | plan + enqueue (s) | node-event writes (s) | µs / write | fenced (s) | direct SET (s) | Redis commands / write |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|")
    for row in results["scale"]:
        add(
            f"| {row['nodes']:,} | {row['roots']} | {row['plan_save']:.2f} | {row['enqueue']:.3f} | {row['plan_enqueue']:.2f} "
            f"| {row['writes']:.2f} | {row['write_us']:.0f} | {_seconds(row.get('fenced_writes'))} "
            f"| {_seconds(row.get('direct_writes'))} "
            f"| {_commands(row)} |"
        )
    add("")
    lines.extend(recovery_section(results))
    add("## Method")
    add("")
    add(
        "- Projects: generated by `benchmarks/generate.py` into a temporary folder, models in about √N layers, "
        "each reading 1–5 models of earlier layers (at least one from the layer before), layer 0 reading a seed; "
        "every model a table of `range(rows)`, one `not_null` test each. Every measurement builds into a new "
        "DuckDB file. Before a size is measured, one untimed `dbt parse` writes the partial-parse file both "
        "approaches then reuse."
    )
    add(
        "- Plain baseline: `dbt build --threads T` as a new process, wall time to exit (interpreter start, dbt "
        "import and parse included: that is what a user or a one-task-per-build Celery setup pays)."
    )
    add(
        "- dbt-celery: `dbt_celery.run.submit()` from this process (app from `create_app(settings_from_env(...))`, "
        "Redis broker and backend) to `DbtRun.wait()` returning, i.e. the last consumer terminal. Workers: "
        "`celery -A dbt_celery worker -Q dbt_celery.producer,dbt_celery.fallback,bench.naive -P solo` with "
        "`DBT_CELERY_PRELOAD_DBT=1` and `celery -A dbt_celery worker -Q dbt_celery.consumer -P threads -c 4`, "
        "both `--without-gossip --without-mingle --include benchmarks.naive` (the naive task and a "
        "remote-control probe), warmed with one small run first."
    )
    add(
        "- Redis: the harness picks two databases that hold no keys and have no client connected (the machine "
        "is shared; `--redis-db` names one explicitly) and flushes only those. Every run checks that the "
        "producer ran in this harness's own worker (the pid in `ProducerState.worker`, host:pid:nonce), so a foreign worker on the "
        "same database fails the benchmark instead of skewing it. `INFO commandstats` is server-wide: the idle "
        "rate above includes other tenants."
    )
    add(
        "- R3 wake-up lag per node = the consumer's `NodeOutcome.recorded_at` minus dbt's `finished_at` for that node, "
        "from the outcome records, pooled over repetitions. It includes the poll back-off and the chain: a "
        "consumer starts only after its parents' consumers passed."
    )
    add("")
    (out / "benchmarks.md").write_text("\n".join(lines) + "\n")
    return out / "benchmarks.md"
