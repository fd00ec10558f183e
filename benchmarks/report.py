"""Turn the raw results into ratios, targets, ``docs/benchmarks.md`` and its PNG charts."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Iterable

from benchmarks.charts import MB, draw_charts, ordered_cases
from benchmarks.measure import WAIT_INTERVAL, percentile
from benchmarks.profiles import HUGE, LARGE, PROFILES
from benchmarks.recovery import recovery_ok, timeline_text
from dbt_celery.core.spec import DEFAULT_IDLE_WAIT

#: Light sizes the R1 target is judged at (the issue's overhead case).
R1_SIZES = (200, 1_000)
R1_MAX, EXECUTIONS_MAX, CONSUMER_CPU_MAX, LAG_P95_MAX, EMBEDDED_MAX = 1.05, 1.5, 0.10, 0.5, 1.3

#: The targets, as (key, description); checked by :func:`targets`.
TARGETS = {
    "r1": f"R1 dbt-celery / plain dbt build ≤ {R1_MAX} at 200 and 1,000 light models",
    "r1_other": f"R1 ≤ {R1_MAX} at every other case measured (heavy, views, other light sizes)",
    "executions": f"consumer executions per node ≤ {EXECUTIONS_MAX} (mean, every size)",
    "consumer_cpu": f"consumer CPU ≤ {CONSUMER_CPU_MAX:.0%} of the producer's (every size)",
    "lag": f"wake-up lag p95 ≤ {LAG_P95_MAX} s (every size)",
    "r2": "R2 naive / dbt-celery ≥ 15 at 200 heavy models",
    "r4_plan": "R4 plan + enqueue of 10,000 nodes ≤ 3 s",
    "r4_writes": "R4 10,000 node-event writes ≤ 2 s of producer time (fenced, 4 per write as 4 dbt threads finish)",
    "rss": "consumer worker RSS ≤ 100 MB, dbt never imported there",
    "embedded": f"embedded `dbt-celery run examples/jaffle_shop` / `dbt build` ≤ {EMBEDDED_MAX} (first and second run)",
    "recovery": "recovery: producer SIGKILLed at 50% of nodes / undisturbed run ≤ 1.5",
}


# -- summary ----------------------------------------------------------------------------------
def _median(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def summarize_case(data: dict[str, Any]) -> dict[str, Any]:
    """The ratios and statistics of one measured case (profile and size)."""
    cli, celery = data["cli"], data["celery"]
    pairs = [c["wall"] / b["wall"] for c, b in zip(celery, cli)]
    lags = [lag for m in celery for lag in m["lags"]]
    runs = [m["executions"] for m in celery]
    late = [e["late_executions"] / e["nodes"] for e in runs if e.get("late_counted")]
    summary: dict[str, Any] = {
        "profile": data["profile"],
        "models": data["models"],
        "nodes": data["nodes"],
        "pairs": len(pairs),
        "cli_median": statistics.median(m["wall"] for m in cli),
        "celery_median": statistics.median(m["wall"] for m in celery),
        "r1": statistics.median(pairs),
        "r1_pairs": pairs,
        "lag_p50": percentile(lags, 0.5) if lags else None,
        "lag_p95": percentile(lags, 0.95) if lags else None,
        "lag_max": max(lags) if lags else None,
        "lag_count": len(lags),
        "tail_lag": statistics.median(m["tail_lag"] for m in celery),
        "executions_per_node": statistics.fmean(e["executions_mean"] for e in runs),
        "ignored_per_node": statistics.fmean(e.get("ignored_mean", 0.0) for e in runs),
        "executions_max": max(e["executions_max"] for e in runs),
        "nodes_executed_more_than_once": max(e["nodes_executed_more_than_once"] for e in runs),
        "deliveries_per_node": statistics.fmean(e["deliveries_mean"] for e in runs),
        "late_executions_per_node": statistics.fmean(late) if late else None,
        "executions_total": max(round(e["executions_mean"] * e["nodes"]) + e["late_executions"] for e in runs),
        "outcome_executions_per_node": statistics.fmean(m["outcome_executions_per_node"] for m in celery),
        "worker_reads_per_node": statistics.fmean(m["redis"]["worker_reads_per_node"] for m in celery),
        "redis_per_node": {
            name: statistics.fmean(m["redis"]["per_node"].get(name, 0.0) for m in celery)
            for name in sorted({name for m in celery for name in m["redis"]["per_node"]})
        },
        "redis_total_per_node": statistics.fmean(m["redis"]["total_per_node"] for m in celery),
        "redis_kb_per_node": statistics.fmean(
            m["redis"]["kb_in_per_node"] + m["redis"]["kb_out_per_node"] for m in celery
        ),
        "consumer_rss_after": celery[-1]["consumer_rss"],
        "consumer_peak_rss": max(m["consumer_peak_rss"] for m in celery),
        "producer_peak_rss": max(m["producer_peak_rss"] for m in celery),
        "cli_peak_rss": max(m["peak_rss"] for m in cli),
        "consumer_cpu_share": statistics.median(m["cpu"]["consumer"] / m["cpu"]["producer"] for m in celery),
        "machine_busy": statistics.median(
            (m["cpu"]["producer"] + m["cpu"]["consumer"] + m["cpu"]["observer"]) / m["wall"] for m in celery
        ),
        "phases": {name: statistics.median(m["phases"][name] for m in celery) for name in celery[0]["phases"]},
        "cli_before_first_node": _median(m["before_first_node"] for m in cli),
        "cli_nodes_span": _median(m["nodes_span"] for m in cli),
        "celery_dbt_span": _median(m.get("dbt_nodes_span") for m in celery),
        "cpu": {
            "cli": statistics.median(m["cpu"] for m in cli),
            **{k: statistics.median(m["cpu"][k] for m in celery) for k in celery[0]["cpu"]},
        },
        "plan": celery[-1].get("plan"),
        "depends_on_edges": data.get("depends_on_edges"),
    }
    if summary["late_executions_per_node"] is not None:
        summary["executions_all_per_node"] = summary["executions_per_node"] + summary["late_executions_per_node"]
    alone = data.get("producer_alone")
    if alone:
        summary["alone"] = alone
        summary["r1_without_consumers"] = alone["to_producer_finished"] / summary["cli_median"]
    naive = data.get("naive")
    if naive:
        summary["naive_per_node"] = naive["per_node"]
        summary["naive_total"] = naive["wall"] if naive["full"] else naive["per_node"] * data["nodes"]
        summary["naive_sampled"] = not naive["full"]
        summary["naive_nodes_timed"] = naive["nodes_timed"]
        summary["r2"] = summary["naive_total"] / summary["celery_median"]
    return summary


def _every(
    summaries: list[tuple[str, dict[str, Any]]], value: Any, ok: Any, fmt: str, missing: str
) -> tuple[bool | None, str]:
    """A target judged on every case: met when ``ok`` holds for each value; the values listed."""
    values = [(key, v) for key, s in summaries if (v := value(s)) is not None]
    if not values:
        return None, missing
    return all(ok(v) for _, v in values), ", ".join(f"{fmt.format(v)} at {key.replace('/', ' ')}" for key, v in values)


def targets(results: dict[str, Any]) -> dict[str, tuple[bool | None, str]]:
    """Each target: met (None when not measured) and the value it was judged on."""
    summaries = [(key, data["summary"]) for key, data in ordered_cases(results)]
    judged = [(k, s) for k, s in summaries if s["profile"] == "light" and s["models"] in R1_SIZES]
    others = [(k, s) for k, s in summaries if (k, s) not in judged]
    out: dict[str, tuple[bool | None, str]] = {}
    light = ", ".join(f"{s['r1']:.2f} at light {s['models']}" for _, s in summaries if s["profile"] == "light")
    out["r1"] = _every(
        judged,
        lambda s: s["r1"],
        lambda v: v <= R1_MAX,
        "{:.2f}",
        "light 200 / 1,000 not measured" + (f" ({light})" if light else ""),
    )
    out["r1_other"] = _every(others, lambda s: s["r1"], lambda v: v <= R1_MAX, "{:.2f}", "no other size measured")
    out["executions"] = _every(summaries, _executions_in_all, lambda v: v <= EXECUTIONS_MAX, "{:.2f}", "not measured")
    out["consumer_cpu"] = _every(
        summaries, lambda s: s["consumer_cpu_share"], lambda v: v <= CONSUMER_CPU_MAX, "{:.0%}", "not measured"
    )
    out["lag"] = _every(summaries, lambda s: s["lag_p95"], lambda v: v <= LAG_P95_MAX, "{:.2f} s", "not measured")
    heavy = dict(summaries).get("heavy/200")
    if heavy and "r2" in heavy:
        out["r2"] = (
            heavy["r2"] >= 15,
            f"{heavy['r2']:.0f}× at heavy 200" + (" (sampled)" if heavy["naive_sampled"] else ""),
        )
    else:
        out["r2"] = (None, "heavy 200 not measured")
    big = max(results["scale"], key=lambda row: row["nodes"]) if results.get("scale") else None
    if big and big["nodes"] >= 10_000:
        out["r4_plan"] = (big["plan_enqueue"] <= 3.0, f"{big['plan_enqueue']:.2f} s")
        # The producer's time: its writes as it makes them (batched, fenced); one-at-a-time is shown beside.
        producer_time = big.get("batched_writes", big["writes"])
        out["r4_writes"] = (
            producer_time <= 2.0,
            f"{producer_time:.2f} s in writes of 4 (one at a time: {big['writes']:.2f} s)",
        )
    else:
        out["r4_plan"] = out["r4_writes"] = (None, "10,000 nodes not measured")
    probe = results.get("consumer_probe_end")
    if probe:
        rss = max([probe["rss_bytes"]] + [s["consumer_peak_rss"] for _, s in summaries])
        out["rss"] = (
            rss <= 100 * MB and not probe["dbt_imported"],
            f"{rss / MB:.0f} MB (peak over the runs), dbt {'imported' if probe['dbt_imported'] else 'not imported'}",
        )
    else:
        out["rss"] = (None, "no worker measured")
    embedded = (results.get("embedded") or {}).get("summary")
    if embedded:
        first, second = embedded["first"]["ratio"], embedded["second"]["ratio"]
        out["embedded"] = (
            max(first, second) <= EMBEDDED_MAX,
            f"{first:.2f} first run, {second:.2f} second run ({results['embedded']['pairs']} pair(s))",
        )
    else:
        out["embedded"] = (None, "not measured (part `embedded` not selected)")
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


def ratio_lines(key: str, s: dict[str, Any]) -> list[str]:
    """What the harness prints once a case is done."""
    lines = [
        f"  R1 overhead   {key}: dbt-celery {s['celery_median']:.2f} s / dbt build {s['cli_median']:.2f} s = "
        f"{s['r1']:.3f} (pairs: {', '.join(f'{r:.2f}' for r in s['r1_pairs'])})",
    ]
    if "r2" in s:
        how = (
            f"SAMPLED: {s['naive_nodes_timed']} nodes timed, {s['naive_per_node']:.2f} s/node x {s['nodes']} nodes"
            if s["naive_sampled"]
            else "full chain"
        )
        lines.append(
            f"  R2 naive      {key}: naive {s['naive_total']:.0f} s ({how}) / dbt-celery {s['celery_median']:.2f} s = {s['r2']:.1f}"
        )
    if s["lag_p50"] is not None:
        lines.append(
            f"  lag           {key}: p50 {s['lag_p50']:.3f} s, p95 {s['lag_p95']:.3f} s, max {s['lag_max']:.3f} s, "
            f"tail {s['tail_lag']:.2f} s over {s['lag_count']} nodes"
        )
    lines.append(
        f"  consumers     {key}: {s['executions_per_node']:.2f} executions/node (max {s['executions_max']}), "
        f"{s['deliveries_per_node']:.2f} deliveries/node, CPU {s['consumer_cpu_share']:.0%} of the producer's, "
        f"{s['redis_total_per_node']:.0f} Redis commands/node, peak RSS producer {s['producer_peak_rss'] / MB:.0f} MB "
        f"consumer {s['consumer_peak_rss'] / MB:.0f} MB"
    )
    return lines


def embedded_lines(s: dict[str, Any]) -> list[str]:
    """What the harness prints once the embedded comparison is done."""
    return [
        f"  embedded      jaffle_shop: dbt build {s['cli_median']:.2f} s; dbt-celery run first {s['first']['median']:.2f} s "
        f"(ratio {s['first']['ratio']:.2f}), second {s['second']['median']:.2f} s (ratio {s['second']['ratio']:.2f})"
    ]


# -- why targets were missed ---------------------------------------------------------------------
#: How a waiting node's two messages cost one execution (from the library's design: enqueue, then wake).
WAITING_COPY = (
    f"A consumer sent before dbt reached its node goes out with a countdown (`idle_wait`, {DEFAULT_IDLE_WAIT:g} s) "
    "and the producer sends a second copy under the same task id when the node's record lands (the wake), which "
    "does the work. The first copy is delivered at once and held by the worker until its countdown ends; then a "
    "worker whose pool runs in its own process (`-P threads`, `solo`) drops it unrun when that process ended the task "
    "(`ConsumerRequest`: acknowledged, no execution, no task event). A copy held by another worker, or under "
    "`-P prefork`, still executes and ends with `Ignore`."
)


def _floor_ms(floor: dict[str, Any]) -> float | None:
    """CPU milliseconds per no-op task of the bare Celery worker (None when not measured)."""
    if not floor.get("cpu_seconds") or not floor.get("tasks_started"):
        return None
    return float(floor["cpu_seconds"]) / floor["tasks_started"] * 1000


def _executions_in_all(summary: dict[str, Any]) -> float:
    """Executions per node, counting the waiting copies that ran after the run's window when they were counted."""
    return float(summary.get("executions_all_per_node") or summary["executions_per_node"])


def _shares(pairs: list[Any], count: int = 5) -> str:
    return ", ".join(f"`{name}` {share:.0%}" for name, share in pairs[:count]) or "–"


def _profile(results: dict[str, Any], role: str) -> dict[str, Any] | None:
    profile = results.get("cpu_profile") or {}
    summary = profile.get(role)
    return summary if summary and summary.get("samples") else None


#: Shares of one leaf function that differ less than this count as the same.
SAME_SHARE = 0.05


def _node_thread_text(producer: dict[str, Any], cli: dict[str, Any]) -> str:
    """What dbt's own node threads did in the producer against the plain build (empty for older profiles)."""
    ours, theirs = producer.get("dbt_node_thread_samples"), cli.get("dbt_node_thread_samples")
    if not ours or not theirs:
        return ""
    text = (
        f" dbt's node threads (the stacks under its `call_runner`) were sampled {ours:,} times in the producer "
        f"against {theirs:,} in the plain build ({ours / theirs:.2f}×; one rate per thread, so thread-seconds "
        f"compare, waiting for the GIL or a lock included); by leaf function, producer "
        f"{_shares(producer['dbt_node_thread_functions'], 4)}; plain build {_shares(cli['dbt_node_thread_functions'], 4)}."
    )
    plain = dict(cli["dbt_node_thread_functions"])
    shift = max(
        (abs(share - plain.get(name, 0.0)) for name, share in producer["dbt_node_thread_functions"][:4]), default=1.0
    )
    if ours > theirs and shift < SAME_SHARE:
        text += (
            " The same functions in nearly the same shares: dbt's threads ran slower as a whole, not in one "
            "function of dbt-celery's making. They share the producer's GIL with its own work (the dbt-celery "
            "frames above), and the machine's CPUs with the consumer worker and Redis."
        )
    return text


def _inclusive(summary: dict[str, Any] | None, package: str) -> float:
    return dict(summary["inclusive_packages"]).get(package, 0.0) if summary else 0.0


def miss_notes(results: dict[str, Any], met: dict[str, tuple[bool | None, str]]) -> list[str]:
    """Bullet points explaining each missed target from this run's own numbers."""
    summaries = [(key, data["summary"]) for key, data in ordered_cases(results)]
    cpus = results["machine"]["nproc"]
    producer, consumer, cli = (_profile(results, role) for role in ("producer", "consumer", "cli"))
    notes: list[str] = []
    if met["r1"][0] is False or met["r1_other"][0] is False:
        for key, s in summaries:
            if s["r1"] <= R1_MAX:
                continue
            p = s["phases"]
            alone = s.get("alone")
            text = (
                f"- **R1 {s['r1']:.2f} at {key.replace('/', ' ')}** ({s['nodes']:,} nodes; dbt-celery "
                f"{s['celery_median']:.1f} s vs dbt build {s['cli_median']:.1f} s). Before the first node: "
                f"{p['queue'] + p['plan_and_start']:.1f} s (queue {p['queue']:.2f} + parse, select, plan and enqueue "
                f"{p['plan_and_start']:.1f}) vs the CLI's {s['cli_before_first_node'] or float('nan'):.1f} s (interpreter, "
                f"import, parse); dbt's node span {p['nodes_span']:.1f} s in the producer vs {s['cli_nodes_span'] or float('nan'):.1f} s "
                f"in the CLI; after the last node {p['producer_finish'] + max(p['tail'], 0) + p['observer']:.1f} s, of which "
                f"{p['observer']:.1f} s from the last outcome to `wait()` returning."
            )
            if alone:
                text += (
                    f" With the consumer worker paused the producer finished {alone['to_producer_finished']:.1f} s after "
                    f"submit ({s['r1_without_consumers']:.2f}× the CLI): "
                    + (
                        "the consumers' competition for the CPUs is most of the gap."
                        if s["r1_without_consumers"] <= R1_MAX
                        else "the producer alone is already slower than the CLI."
                    )
                )
            text += (
                f" CPU per run: producer {s['cpu']['producer']:.1f} s, consumer {s['cpu']['consumer']:.1f} s, this observer "
                f"(`DbtRun.wait()`, which reads every node's status every {WAIT_INTERVAL:g} s, and the event receiver) "
                f"{s['cpu']['observer']:.1f} s, plain CLI {s['cpu']['cli']:.1f} s; the workers kept "
                f"{s['machine_busy']:.2f} of this machine's {cpus} CPUs busy on average."
            )
            notes.append(text)
        if producer and cli:
            notes.append(
                f"- Producer profile (py-spy, {results['cpu_profile']['case']}): dbt-celery's own code is on the stack in "
                f"{_inclusive(producer, 'dbt_celery'):.0%} of the producer's samples, Celery/kombu in "
                f"{_inclusive(producer, 'celery') + _inclusive(producer, 'kombu'):.0%} (overlapping); by innermost "
                f"dbt-celery function: {_shares(producer['dbt_celery_innermost'])}. Leaf packages: producer "
                f"{_shares(producer['self_packages'])}; plain `dbt build` {_shares(cli['self_packages'])}."
                + _node_thread_text(producer, cli)
            )
    if met["executions"][0] is False:
        for key, s in summaries:
            if _executions_in_all(s) <= EXECUTIONS_MAX:
                continue
            notes.append(
                f"- **{_executions_in_all(s):.2f} consumer executions per node at {key.replace('/', ' ')}** "
                f"({s['executions_per_node']:.2f} inside the run, max {s['executions_max']}; "
                f"{s['nodes_executed_more_than_once']:,} of {s['nodes']:,} nodes ran more than once inside it; "
                f"{s['ignored_per_node']:.2f} executions per node ended with `Ignore`, i.e. without a result; "
                f"{s['deliveries_per_node']:.2f} messages delivered per node). {WAITING_COPY}"
            )
    if met["consumer_cpu"][0] is False:
        worst = max(summaries, key=lambda item: item[1]["consumer_cpu_share"])
        key, s = worst
        text = (
            f"- **Consumer CPU up to {s['consumer_cpu_share']:.0%} of the producer's** ({key.replace('/', ' ')}: "
            f"{s['cpu']['consumer']:.1f} CPU-s for {s['nodes']:,} nodes, {s['cpu']['consumer'] / s['nodes'] * 1000:.1f} ms "
            f"per node, {s['executions_per_node']:.2f} executions and {s['deliveries_per_node']:.2f} deliveries per node, "
            f"{s['redis_total_per_node']:.0f} Redis commands per node)."
        )
        floor_ms = _floor_ms(results.get("floor") or {})
        if floor_ms:
            text += (
                f" A bare `celery worker` with the same flags spent {floor_ms:.1f} ms of CPU per no-op task (delivered, "
                f"executed, result stored, events on): a node's {s['deliveries_per_node']:.0f} deliveries and "
                f"{s['executions_per_node']:.0f} execution cost the consumer "
                f"{s['cpu']['consumer'] / s['nodes'] * 1000 / floor_ms:.1f}× that floor."
            )
        if consumer:
            text += (
                f" In the consumer worker's profile ({results['cpu_profile']['case']}), dbt-celery's code is on the stack in "
                f"{_inclusive(consumer, 'dbt_celery'):.0%} of the samples, Celery in {_inclusive(consumer, 'celery'):.0%}, "
                f"kombu in {_inclusive(consumer, 'kombu'):.0%}, redis-py in {_inclusive(consumer, 'redis'):.0%} "
                f"(overlapping); leaf packages {_shares(consumer['self_packages'])}; by innermost dbt-celery "
                f"function {_shares(consumer['dbt_celery_innermost'])}; without a dbt-celery frame, by innermost "
                f"Celery-stack function {_shares(consumer.get('machinery_innermost') or [], 6)}."
            )
        plan = s.get("plan") or {}
        if plan:
            text += (
                f" The plan has {plan['edges']:,} edges for {s['depends_on_edges']:,} `depends_on` edges; a passing "
                f"consumer reads {plan['release_keys_per_node']:,.0f} outcome keys to release its children."
            )
        notes.append(text)
    if met["lag"][0] is False:
        for key, s in summaries:
            if (s["lag_p95"] or 0) <= LAG_P95_MAX:
                continue
            notes.append(
                f"- **Lag p95 {s['lag_p95']:.2f} s at {key.replace('/', ' ')}** (p50 {s['lag_p50']:.2f}, max "
                f"{s['lag_max']:.2f}, tail {s['tail_lag']:.2f} s). A node's outcome waits for its producer batch to be "
                "written and its consumer woken, for a free consumer thread, and for its parents' consumers (a consumer "
                f"is sent only once they passed); the workers kept {s['machine_busy']:.2f} of {cpus} CPUs busy, "
                f"so a woken consumer also waits for a CPU."
            )
    if met["rss"][0] is False:
        start, end = results["consumer_probe_start"], results["consumer_probe_end"]
        floor = results.get("floor") or {}
        peak = max([end["rss_bytes"]] + [s["consumer_peak_rss"] for _, s in summaries])
        text = (
            f"- **Consumer RSS up to {peak / MB:.0f} MB** ({end['rss_bytes'] / MB:.0f} MB after all runs, "
            f"{start['rss_bytes'] / MB:.0f} MB right after start; dbt "
            f"{'imported' if end['dbt_imported'] else 'not imported'}, {end['modules']} modules)."
        )
        if floor:
            text += (
                f" A bare `celery worker` of a trivial app with the same flags took {floor['rss_after_start'] / MB:.0f} MB "
                f"after start and {floor['rss_after_tasks'] / MB:.0f} MB after {floor['tasks_started']:,} no-op tasks "
                f"(peak {floor['peak_rss'] / MB:.0f} MB): that much is the `celery` command and its installed plugins; "
                f"dbt-celery's consumers add {(peak - floor['peak_rss']) / MB:.0f} MB above it. "
                + rss_growth(results.get("consumer_rss_trace") or [])
            )
        notes.append(text)
    if met["embedded"][0] is False:
        e = results["embedded"]["summary"]
        for step in ("first", "second"):
            if e[step]["ratio"] <= EMBEDDED_MAX:
                continue
            p, c = e[step]["phases"], e["cli_phases"]
            notes.append(
                f"- **Embedded {step} run {e[step]['ratio']:.2f}× plain dbt** ({e[step]['median']:.1f} s vs "
                f"{e['cli_median']:.1f} s for {e['nodes']} nodes). dbt-celery: {p['startup']:.1f} s from the command to "
                f"the producer starting (both workers start, the producer imports dbt, the run is submitted), "
                f"{p['plan']:.1f} s to the first node (parse, select, plan), {p['nodes']:.1f} s of nodes, "
                f"{p['tail']:.1f} s to the last outcome, {p['exit']:.1f} s to exit (workers stopped). Plain dbt: "
                f"{c['startup']:.1f} s to the first node, {c['nodes']:.1f} s of nodes, {c['exit']:.1f} s to exit. Reaching "
                f"the first node took {p['startup'] + p['plan'] - c['startup']:.1f} s longer than in the CLI, of a gap of "
                f"{e[step]['median'] - e['cli_median']:.1f} s: on a project this small, starting two workers (one "
                "importing dbt) and planning before the build is the cost."
            )
    if met["r4_writes"][0] is False:
        big = max(results["scale"], key=lambda row: row["nodes"])
        notes.append(
            f"- **R4 writes {big['writes']:.2f} s for {big['nodes']:,} events** ({big['write_us']:.0f} µs each); the same "
            f"records as direct SETs took {big['direct_writes']:.2f} s: one sequential Redis round trip per record (the "
            "producer batches its writes; this measures the one-at-a-time worst case)."
        )
    if met["r4_plan"][0] is False:
        big = max(results["scale"], key=lambda row: row["nodes"])
        notes.append(
            f"- **R4 plan + enqueue {big['plan_enqueue']:.2f} s for {big['nodes']:,} nodes**: saving the plan took "
            f"{big['plan_save']:.2f} s and enqueueing its {big['roots']} roots {big['enqueue']:.2f} s."
        )
    heavy = dict(summaries).get("heavy/200")
    if met["r2"][0] is False and heavy:
        notes.append(
            f"- **R2 {heavy['r2']:.1f}× at heavy 200**: the naive chain took {heavy['naive_per_node']:.2f} s per node "
            f"(a new dbt process each) against dbt-celery's {heavy['celery_median'] / heavy['nodes']:.3f} s per node."
        )
    if met["recovery"][0] is False:
        notes.append(f"- **Recovery {met['recovery'][1]}**: see *Recovery* below for where the time went.")
    return notes


def rss_growth(trace: list[Any]) -> str:
    """What the consumer RSS after each run says: growing run after run, or level."""
    values = [rss for _, _, rss in trace]
    if len(values) < 3:
        return ""
    steps = [later - earlier for earlier, later in zip(values, values[1:])]
    last = statistics.fmean(steps[-3:])
    trend = (
        f"still growing over the last runs (+{last / MB:.1f} MB per run)"
        if last > 2 * MB
        else f"level over the last runs ({last / MB:+.1f} MB per run)"
    )
    return f"After each run it was {', '.join(f'{v / MB:.0f}' for v in values)} MB: {trend}."


# -- markdown ---------------------------------------------------------------------------------
def _mb(value: float | None) -> str:
    return "–" if value is None else f"{value / MB:.0f}"


def _num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if value is None else fmt.format(value)


def _profile_section(results: dict[str, Any]) -> list[str]:
    profile = results.get("cpu_profile")
    lines = ["## Where the CPU goes (py-spy)", ""]
    if not profile:
        return [*lines, "Not measured in this run (`--no-cpu-profile`, or no Redis part selected).", ""]
    if profile.get("error"):
        return [*lines, f"Not measured: {profile['error']}.", ""]
    lines += [
        f"One extra run of {profile['case'].replace('/', ' ')} (not in the ratios: {profile['wall']:.1f} s, sampling slows "
        f"it a little) with `py-spy record --rate {profile['rate']} --nonblocking` attached to the producer and the "
        f"consumer worker, and one plain `dbt build` run under py-spy ({profile['cli_wall']:.1f} s). A sample is one "
        "non-idle thread (running Python, or inside a C call such as DuckDB's). *Leaf* is the package of the innermost "
        "Python frame; *on the stack* counts a package once per sample wherever it appears (these overlap); "
        "*innermost dbt-celery function* is the deepest dbt-celery frame of the sample: which of dbt-celery's "
        "operations the time was spent under, whatever library ran below it.",
        "",
        "| process | samples | leaf packages | on the stack | innermost dbt-celery function |",
        "|---|---|---|---|---|",
    ]
    for role, label in (("producer", "producer worker"), ("consumer", "consumer worker"), ("cli", "plain dbt build")):
        summary = profile.get(role) or {}
        if not summary.get("samples"):
            lines.append(f"| {label} | – | {summary.get('error', 'no samples')[:200]} | | |")
            continue
        lines.append(
            f"| {label} | {summary['samples']:,} | {_shares(summary['self_packages'], 6)} "
            f"| {_shares(summary['inclusive_packages'], 6)} | {_shares(summary['dbt_celery_innermost'], 6)} |"
        )
    consumer = profile.get("consumer") or {}
    if consumer.get("samples"):
        lines += ["", "Hottest leaf frames in the consumer worker: " + _shares(consumer["self_functions"], 8) + "."]
        if consumer.get("machinery_innermost"):
            lines += [
                "",
                "Consumer worker samples without a dbt-celery frame, by the innermost Celery/kombu/billiard function "
                "(shares of all its samples): " + _shares(consumer["machinery_innermost"], 10) + ".",
            ]
    producer = profile.get("producer") or {}
    if producer.get("samples"):
        lines += ["", "Hottest leaf frames in the producer worker: " + _shares(producer["self_functions"], 8) + "."]
    return [*lines, ""]


def _embedded_section(results: dict[str, Any]) -> list[str]:
    data = results.get("embedded")
    lines = ["## The embedded default on examples/jaffle_shop", ""]
    if not data:
        return [*lines, "Not measured in this run (part `embedded` not selected: `--only ...,embedded`).", ""]
    s = data["summary"]
    lines += [
        "Command line against command line on a copy of `examples/jaffle_shop` (one untimed `dbt parse` first, so "
        "both reuse partial parsing): `dbt build` vs `dbt-celery run examples/jaffle_shop --json` with no broker in "
        "the environment (the embedded default: two local workers on a file broker and a SQLite store under "
        "`DBT_CELERY_STATE_DIR`). Each pair takes a fresh state folder and runs, in alternating order, the plain build, "
        "a *first* dbt-celery run (empty state folder) and a *second* one (the folder the first left). Each build "
        "writes the same DuckDB file, removed first. Ratio = median of the per-pair ratios. CPU and peak RSS come from `wait4` on the "
        "command (for dbt-celery: the command and the workers it started and reaped).",
        "",
        f"| command | wall (s) | ratio (target ≤ {EMBEDDED_MAX}) | per pair | startup | plan | nodes | tail | exit | CPU s | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| dbt build | {s['cli_median']:.2f} | 1 | | {s['cli_phases']['startup']:.2f} | | {s['cli_phases']['nodes']:.2f} "
        f"| | {s['cli_phases']['exit']:.2f} | {s['cli_cpu']:.1f} | {_mb(s['cli_peak_rss'])} |",
    ]
    for step in ("first", "second"):
        e, p = s[step], s[step]["phases"]
        lines.append(
            f"| dbt-celery run, {step} | {e['median']:.2f} | {e['ratio']:.2f} | {', '.join(f'{r:.2f}' for r in e['pairs'])} "
            f"| {p['startup']:.2f} | {p['plan']:.2f} | {p['nodes']:.2f} | {p['tail']:.2f} | {p['exit']:.2f} "
            f"| {e['cpu']:.1f} | {_mb(e['peak_rss'])} |"
        )
    lines += [
        "",
        "Phases (medians): dbt-celery `startup` command start → producer task starts (imports, both workers started, "
        "run submitted, queue); `plan` → first node starts (parse, select, plan, roots enqueued); `nodes` first node "
        "start → last node finish; `tail` → last consumer outcome; `exit` → the command returns (last status read, "
        "table printed, workers stopped). Plain dbt: `startup` process start → first node; `exit` last node → exit. "
        f"{s['nodes']} nodes.",
        "",
    ]
    return lines


def write_markdown(results: dict[str, Any], out: Path) -> Path:
    """Write ``benchmarks.md`` (and the raw ``benchmarks.json`` and the charts beside it)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").write_text(json.dumps(results, indent=1, sort_keys=True, default=str))
    charts = draw_charts(results, out)
    cases = ordered_cases(results)
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
        f"{machine['platform']}; load average at start {machine['load_start']}, at end {machine.get('load_end', '?')}"
    )
    add("- versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()))
    add(
        f"- settings: {cfg['threads']} dbt threads for both approaches, {cfg['seeds']} seeds, up to {cfg['reps']} A/B "
        f"pair(s) per size below {LARGE:,} models, {min(cfg['reps'], 2)} below {HUGE:,} and 1 beyond (order alternated), "
        "naive baseline "
        + ("run in full" if cfg["naive_full"] else f"sampled on {cfg['naive_sample']} nodes")
        + (f", Redis DB {cfg['redis_db']} (R4: DB {cfg['scale_db']})" if cfg.get("redis_db") is not None else "")
    )
    for name, profile in PROFILES.items():
        if any(data["profile"] == name for _, data in cases):
            add(f"- profile `{name}`: {profile.description}")
    add("")
    add("## Targets")
    add("")
    add("| target | result | met |")
    add("|---|---|---|")
    for key, text in TARGETS.items():
        ok, value = met[key]
        add(f"| {text} | {value} | {'n/a' if ok is None else ('yes' if ok else '**no**')} |")
    add("")
    add("## Why targets were missed")
    add("")
    notes = miss_notes(results, met)
    lines.extend(notes or ["Every measured target was met."])
    add("")
    add("## Results by project size")
    add("")
    add(
        "| case | nodes | dbt build (s) | dbt-celery (s) | R1 (pairs) | lag p50 / p95 / max (s) | tail lag (s) "
        "| executions / node: in the run (max), of them Ignore'd, incl. after the run | deliveries / node "
        "| consumer CPU / producer | Redis cmds / node "
        "| peak RSS MB: dbt build / producer / consumer |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key, data in cases:
        s = data["summary"]
        lag = f"{s['lag_p50']:.2f} / {s['lag_p95']:.2f} / {s['lag_max']:.2f}" if s["lag_p50"] is not None else "–"
        add(
            f"| {key.replace('/', ' ')} | {s['nodes']:,} | {s['cli_median']:.2f} | {s['celery_median']:.2f} "
            f"| {s['r1']:.3f} ({', '.join(f'{r:.2f}' for r in s['r1_pairs'])}) | {lag} | {s['tail_lag']:.2f} "
            f"| {s['executions_per_node']:.2f} ({s['executions_max']}), {s['ignored_per_node']:.2f}, "
            f"{_num(s.get('executions_all_per_node'))} | {s['deliveries_per_node']:.2f} "
            f"| {s['consumer_cpu_share']:.0%} | {s['redis_total_per_node']:.0f} "
            f"| {_mb(s['cli_peak_rss'])} / {_mb(s['producer_peak_rss'])} / {_mb(s['consumer_peak_rss'])} |"
        )
    add("")
    add(
        "- R1 = dbt-celery wall / plain `dbt build` wall, median of the alternating A/B pairs (each pair's ratio in "
        "brackets). dbt-celery wall = `submit()` → `DbtRun.wait()` returning; dbt build wall = process start → exit."
    )
    add(
        "- Executions per node = `task-started` events of the node's consumer task id between submit and the run's "
        "end, from a Celery event receiver in the harness (the workers run with `-E`); deliveries = `task-received` "
        "events in the same window (a waiting copy on its countdown is delivered at once and held by the worker). "
        "*Ignore'd* executions sent no `task-succeeded`/`-failed`/`-retried` event: they found nothing to do yet, or "
        "the outcome already written. *Incl. after the run* adds the waiting copies still on their countdown when "
        "the run ended, which execute later (counted once their countdown has passed). " + WAITING_COPY
    )
    add(
        "- Lag = the consumer's `NodeOutcome.recorded_at` − dbt's `finished_at` for the node, pooled over the runs; tail "
        "lag = last outcome − last node finished. Consumer CPU / producer = the two workers' CPU seconds (from /proc) "
        "over the run, median of the runs. Peak RSS = `VmHWM`, reset before each run (`/proc/PID/clear_refs`), so it "
        "is each run's own peak; dbt build's from `wait4`."
    )
    naive = [(k, d) for k, d in cases if "r2" in d["summary"]]
    if naive:
        add("")
        add(
            "R2, the naive baseline (one new `dbt build --select <node> --indirect-selection empty` process per node, "
            "chained as Celery tasks on the producer worker): "
            + "; ".join(
                f"{k.replace('/', ' ')}: {d['summary']['naive_total']:.0f} s"
                + (
                    f" (extrapolated: {d['summary']['naive_nodes_timed']} nodes timed, {d['summary']['naive_per_node']:.2f} s "
                    f"per node, dbt process alone {d['naive']['dbt_process_mean']:.2f} s, × {d['summary']['nodes']} nodes)"
                    if d["summary"]["naive_sampled"]
                    else ""
                )
                + f" = {d['summary']['r2']:.0f}× dbt-celery"
                for k, d in naive
            )
            + "."
        )
    add("")
    for chart, text in (
        ("benchmarks_scale.png", "costs by project size"),
        ("benchmarks_ratios.png", "R1 and R2 by project size"),
        ("benchmarks_lag.png", "wake-up lag distribution"),
    ):
        if out / chart in charts:
            add(f"![{text}]({chart})")
            add("")
    add("## Where the time goes (medians)")
    add("")
    add(
        "dbt-celery: `queue` submit → producer task starts; `plan_and_start` → first dbt node starts (dbt parse with "
        "partial parsing, selection, plan written, roots enqueued); `nodes_span` first node start → last node finish; "
        "`producer_finish` last node → producer state finished; `tail` producer finished → last consumer outcome "
        "(negative when the last consumer ended before the producer's own wrap-up); `observer` last consumer → "
        f"`wait()` returns (status read every {cfg['wait_interval']} s). Plain dbt build: `before_first_node` process "
        "start → first node starts (interpreter, dbt import, parse); `nodes_span` as above. `consumers paused`: a "
        "diagnostic run (not in the ratios) with the consumer worker frozen (SIGSTOP) until the producer finished."
    )
    add("")
    add(
        "| case | dbt build: before first node | nodes span | celery: queue | plan_and_start | nodes_span "
        "| producer_finish | tail | observer | consumers paused: nodes span / submit → producer done "
        "| CPU s: dbt build / producer / consumer / observer | CPUs busy |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key, data in cases:
        s, p, cpu = data["summary"], data["summary"]["phases"], data["summary"]["cpu"]
        alone = s.get("alone")
        paused = f"{alone['dbt_nodes_span']:.2f} / {alone['to_producer_finished']:.2f}" if alone else "–"
        add(
            f"| {key.replace('/', ' ')} | {_num(s['cli_before_first_node'])} | {_num(s['cli_nodes_span'])} | {p['queue']:.2f} "
            f"| {p['plan_and_start']:.2f} | {p['nodes_span']:.2f} | {p['producer_finish']:.2f} | {p['tail']:.2f} "
            f"| {p['observer']:.2f} | {paused} | {cpu['cli']:.1f} / {cpu['producer']:.1f} / {cpu['consumer']:.1f} / "
            f"{cpu['observer']:.1f} | {s['machine_busy']:.2f} |"
        )
    add("")
    lines.extend(_profile_section(results))
    lines.extend(_embedded_section(results))
    lines.extend(_memory_section(results, cases))
    lines.extend(_scale_section(results))
    lines.extend(recovery_section(results))
    lines.extend(_method_section())
    (out / "benchmarks.md").write_text("\n".join(lines) + "\n")
    return out / "benchmarks.md"


def _memory_section(results: dict[str, Any], cases: list[tuple[str, dict[str, Any]]]) -> list[str]:
    lines = ["## Memory and Redis", ""]
    probe, start = results.get("consumer_probe_end"), results.get("consumer_probe_start")
    if not probe or not start:
        return [*lines, "No worker measured in this run.", ""]
    lines.append(
        f"- Consumer worker (`-P threads -c 4`): {start['rss_bytes'] / MB:.0f} MB after start, "
        f"{probe['rss_bytes'] / MB:.0f} MB after all runs (peak since start {probe['max_rss_bytes'] / MB:.0f} MB); dbt "
        f"imported there: {'**yes**' if probe['dbt_imported'] else 'no'} ({probe['modules']} modules; third-party: "
        f"{', '.join(name for name in probe['packages'] if not name.startswith('_'))})."
    )
    trace = results.get("consumer_rss_trace")
    if trace:
        lines.append(
            "- Consumer worker RSS after each dbt-celery run, in order (warm-up, measured, diagnostic and profiled "
            "runs; MB): " + ", ".join(f"{rss / MB:.0f}" for _, _, rss in trace) + "."
        )
    floor = results.get("floor")
    if floor:
        lines.append(
            f"- Floor: a bare `celery -A benchmarks.bare worker -P threads -c 4 -E` (a trivial app, same broker and "
            f"flags) took {floor['rss_after_start'] / MB:.0f} MB after start and {floor['rss_after_tasks'] / MB:.0f} MB "
            f"after {floor['tasks_started']:,} of {floor['tasks']:,} no-op tasks (peak {floor['peak_rss'] / MB:.0f} MB)"
            + (
                f", and {_floor_ms(floor):.1f} ms of CPU per task (result stored, events on)."
                if _floor_ms(floor)
                else "."
            )
        )
    producer_start, producer = results.get("producer_probe_start"), results.get("producer_probe_end")
    if producer:
        lines.append(
            "- Producer worker (`-P solo`, dbt preloaded): "
            + (f"{producer_start['rss_bytes'] / MB:.0f} MB after start, " if producer_start else "")
            + f"{producer['rss_bytes'] / MB:.0f} MB after all runs (peak since start {producer['max_rss_bytes'] / MB:.0f} MB)."
        )
    lines.append(
        f"- Redis commands while idle (worker heartbeats, blocking pops, other tenants): "
        f"{results['idle_commands_per_second']:.1f}/s, not subtracted below. Calls are `INFO commandstats` deltas "
        "over each run (server-wide), per node; worker reads = MGET+GET minus this process's own reads."
    )
    lines.append("")
    names = top_commands([data["summary"]["redis_per_node"] for _, data in cases])
    lines.append(
        "| case | worker reads / node | "
        + " | ".join(n.upper() for n in names)
        + " | others | all commands | Redis traffic |"
    )
    lines.append("|---|---|" + "---|" * len(names) + "---|---|---|")
    for key, data in cases:
        s = data["summary"]
        per_node = s["redis_per_node"]
        cells = " | ".join(f"{per_node.get(n, 0.0):.1f}" for n in names)
        others = sum(value for name, value in per_node.items() if name not in names)
        lines.append(
            f"| {key.replace('/', ' ')} | {s['worker_reads_per_node']:.1f} | {cells} | {others:.1f} "
            f"| {s['redis_total_per_node']:.0f} | {s['redis_kb_per_node']:.0f} KB |"
        )
    return [*lines, ""]


def top_commands(per_node: list[dict[str, float]], count: int = 12) -> list[str]:
    """The Redis commands with the most calls per node in any case, most first."""
    peak: dict[str, float] = {}
    for case in per_node:
        for name, value in case.items():
            peak[name] = max(peak.get(name, 0.0), value)
    return sorted(peak, key=lambda name: -peak[name])[:count]


def _scale_section(results: dict[str, Any]) -> list[str]:
    lines = ["## R4: scale without dbt", ""]
    if not results.get("scale"):
        return [*lines, "Not measured in this run (no Redis part selected).", ""]
    lines += [
        "A synthetic `ProjectGraph` (half models in layers with 1–5 parents plus test edges, half `not_null` "
        "tests), no dbt: `RunPlan(run_id, dict(graph.nodes)).save(store)` then the root consumers enqueued "
        "with the library's own `enqueue(...)` (claim + `apply_async`) on a Redis queue no worker reads (deleted "
        "after); then one `store.put_events(run_id, [event])` per node, sequentially. `fenced` is the same records "
        "fenced by the run's lease; `batched` the same fenced writes 4 records at a time, as the producer writes "
        "when its four dbt threads finish together (it writes whatever dbt said since its last write); `direct SET` "
        "one plain Redis `SET` each (the floor for one round trip per record).",
        "",
        "| nodes | roots | plan save (s) | enqueue roots (s) | plan + enqueue (s) | node-event writes (s) | µs / write "
        "| fenced (s) | batched, 4 per write (s) | direct SET (s) | Redis commands / write |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["scale"]:
        counts = row.get("write_commands") or {}
        commands = ", ".join(f"{value:.1f} {name.upper()}" for name, value in counts.items() if value >= 0.05) or "–"
        lines.append(
            f"| {row['nodes']:,} | {row['roots']} | {row['plan_save']:.2f} | {row['enqueue']:.3f} | {row['plan_enqueue']:.2f} "
            f"| {row['writes']:.2f} | {row['write_us']:.0f} | {_num(row.get('fenced_writes'))} "
            f"| {_num(row.get('batched_writes'))} | {_num(row.get('direct_writes'))} | {commands} |"
        )
    return [*lines, ""]


def recovery_section(results: dict[str, Any]) -> list[str]:
    """The "Recovery" section: a run whose producer worker is SIGKILLed halfway, against an undisturbed one."""
    data = results.get("recovery")
    lines = ["## Recovery", ""]
    if not data:
        return [*lines, "Not measured in this run (`python -m benchmarks --recovery`).", ""]
    killed, resumed = data["killed"], data["resumed_build"]
    lines += [
        f"On the generated heavy {data['models']}-model project ({data['nodes']} nodes), two dbt-celery runs with "
        f"`RunSpec(heartbeat_timeout={data['heartbeat_timeout']:g})`, each on a fresh DuckDB file: one undisturbed, "
        f"and one whose producer worker's process group (the worker and its in-process dbt) is SIGKILLed once "
        f"{data['kill_fraction']:.0%} of the planned nodes have a record in the store; a new producer worker is "
        "started at once. The run's consumers notice the expired lease and send a resumed producer (generation 2), "
        "which builds every node still unreported in one `dbt build --select ...`.",
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
            f"The resumed producer's `run_results.json` lists {resumed['results']} results for {resumed['nodes']} nodes: "
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


def _method_section() -> list[str]:
    return [
        "## Method",
        "",
        "- Projects: generated by `benchmarks/generate.py` into a temporary folder, models in about √N layers, each "
        "depending on 1–5 models of earlier layers (at least one from the layer before), layer 0 on a seed. Tables "
        "read their parents (`count(*)` of each); views only declare them (`-- depends_on: {{ ref(...) }}`), since "
        "DuckDB binds a view's whole ancestry. Every build of a case writes the same DuckDB file, removed before "
        "each build, and one untimed `dbt parse` comes first, so both approaches parse with partial parsing (a new "
        "file path per build would change dbt's profile hash, which covers the DuckDB path, and force a full parse "
        "every time, as earlier versions of this harness did).",
        "- Plain baseline: `dbt build --threads T` as a new process, wall time to exit (interpreter start, dbt import "
        "and parse included: what a user or a one-task-per-build Celery setup pays).",
        "- dbt-celery: `dbt_celery.run.submit()` from this process to `DbtRun.wait()` returning. Workers: `celery -A "
        "dbt_celery worker -Q dbt_celery.producer,dbt_celery.fallback,bench.naive -P solo` with "
        "`DBT_CELERY_PRELOAD_DBT=1` and `celery -A dbt_celery worker -Q dbt_celery.consumer,dbt_celery.control -P "
        "threads -c 4`, both `-E --without-gossip --without-mingle --include benchmarks.naive`, warmed with two small "
        "runs first.",
        f"- Stale copies: a dbt-celery run's waiting consumer copies still on their countdown ({DEFAULT_IDLE_WAIT:g} s) "
        "when it ends come due during the next measurement, a plain build or a dbt-celery run; the consumer worker "
        "then drops them unrun (an acknowledgement each), or, where one still executes, it slows that measurement "
        "a little (the A/B order alternates, so both kinds get some). The harness does not wait them out between "
        "runs (that would add half a minute per run); it counts the executions per run once their countdown passed.",
        "- Redis: the harness picks two databases that hold no keys and have no client connected (`--redis-db` names "
        "one) and flushes only those. Every run checks that the producer ran in this harness's own worker, so a "
        "foreign worker on the same database fails the benchmark instead of skewing it.",
        "- Parts can be run alone: `python -m benchmarks --only light,heavy,views,embedded` (any subset), "
        "`--light 200,1000 --heavy 50,200 --views 2500` for sizes (the defaults; `--views 2500` is 5,002 nodes), `--quick` for small sizes and one pair, "
        "`--from-json docs/benchmarks.json` to re-render.",
        "",
    ]
