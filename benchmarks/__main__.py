"""``python -m benchmarks``: every dbt-celery benchmark in one command, results in docs/.

    python -m benchmarks                           # everything (about 40 minutes on 2 quiet cores)
    python -m benchmarks --quick                   # small sizes, one pair each: a check while developing
    python -m benchmarks --only light,embedded     # some parts (light, heavy, views, embedded)
    python -m benchmarks --only heavy --sizes 50,200,1000 --out /tmp/bench
    python -m benchmarks --only views              # the 5,000-node plan+build alone (~20 minutes)
    python -m benchmarks --recovery                # also: producer SIGKILLed mid-build (200 models)

Parts: ``light`` (small tables: 200 and 1,000 models), ``heavy`` (100,000-row tables: 50
and 200 models, with the naive baseline), ``views`` (2,500 trivial views and their tests,
5,002 nodes, ~20 minutes on 2 CPUs; ``--views 1000`` for 2,002) and ``embedded`` (``dbt-celery run examples/jaffle_shop`` against
``dbt build``, command line against command line). Each generated size is measured in
alternating A/B pairs against a plain ``dbt build`` CLI of the same project in the same
run (3 pairs below 500 models, 2 up to 2,000, 1 beyond). Then one extra dbt-celery run is sampled
with py-spy (not in the ratios) to say where the CPU goes.

Needs Redis on 127.0.0.1:6379 for all but ``embedded``; uses (and flushes) only two
databases that are empty and have no client (``--redis-db`` names the first). Starts its
own workers and always stops them, also on error or Ctrl-C. ``--from-json
docs/benchmarks.json`` re-renders the doc from saved results without measuring.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from benchmarks.cpuprofile import Sampler, py_spy, record_command, summarize_collapsed
from benchmarks.embedded import measure_embedded, summarize_embedded
from benchmarks.events import EventLog
from benchmarks.floor import measure_floor
from benchmarks.generate import Project, generate
from benchmarks.measure import (
    WAIT_INTERVAL,
    ReadCounter,
    dbt_cli,
    dbt_env,
    fresh_db,
    idle_command_rate,
    measure_celery,
    measure_cli,
    measure_naive,
    measure_producer_alone,
    run_timed,
    sample_nodes,
)
from benchmarks.profiles import HUGE, LARGE, PARTS, PROFILES, case_key, parse_parts, parse_sizes
from benchmarks.recovery import measure_recovery, recovery_lines
from benchmarks.report import TARGETS, embedded_lines, ratio_lines, summarize_case, targets, write_markdown
from benchmarks.scale import measure_scale
from benchmarks.workers import Workers
from dbt_celery.celery.config import create_app, settings_from_env
from dbt_celery.core.spec import DEFAULT_IDLE_WAIT

REDIS_HOST = "redis://127.0.0.1:6379"
SCALE_SIZES = (1_000, 5_000, 10_000)
#: The case the CPU profile samples, when it is measured (else the first case measured).
PROFILED_CASE = "light/1000"


@dataclasses.dataclass(frozen=True)
class Config:
    """What one invocation of the harness measures."""

    parts: tuple[str, ...]
    sizes: dict[str, tuple[int, ...]]  # model counts per generated profile
    quick: bool
    out: Path
    reps: int
    threads: int
    seeds: int
    naive_sample: int
    naive_full: bool
    redis_db: int | None
    embedded_pairs: int
    cpu_profile: bool
    keep: bool = False
    from_json: Path | None = None
    recovery: bool = False
    recovery_size: int = 200
    wait_interval: float = WAIT_INTERVAL

    def reps_for(self, models: int) -> int:
        """A/B pairs at one size (at most two from LARGE models on, one from HUGE on)."""
        return 1 if models >= HUGE else min(self.reps, 2) if models >= LARGE else self.reps

    @property
    def cases(self) -> list[tuple[str, int]]:
        """Every (profile, models) to measure against Redis, in order."""
        return [(name, models) for name in PROFILES if name in self.parts for models in self.sizes[name]]

    def alone_for(self, profile: str, models: int) -> bool:
        """Whether this case also gets the "consumers paused" diagnostic run."""
        chosen = PROFILES[profile].alone
        return models in chosen or (self.quick and bool(chosen) and models == max(self.sizes[profile]))


def parse_args(argv: list[str] | None) -> Config:
    """The command line as a :class:`Config` (exits with a usage message on bad input)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only",
        "--profile",
        default=",".join(PARTS),
        help=f"parts to run, comma-separated (default all: {','.join(PARTS)})",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one pair, 2 naive nodes: for development")
    for name, profile in PROFILES.items():
        parser.add_argument(
            f"--{name}",
            default=None,
            metavar="SIZES",
            help=f"model counts of the {name} profile (default {','.join(map(str, profile.sizes))}, "
            f"quick {','.join(map(str, profile.quick_sizes))})",
        )
    parser.add_argument(
        "--sizes", default=None, help="model counts for light and heavy both (overrides --light/--heavy)"
    )
    parser.add_argument("--out", default="docs", help="folder for benchmarks.md and the charts (default docs/)")
    parser.add_argument(
        "--reps", type=int, default=None, help="A/B pairs per size below 500 models (default 3, quick 1)"
    )
    parser.add_argument("--threads", type=int, default=4, help="dbt threads for both approaches (default 4)")
    parser.add_argument("--seeds", type=int, default=2, help="seed files in each project (default 2)")
    parser.add_argument(
        "--naive-sample", type=int, default=None, help="nodes timed for the naive baseline (default 6, quick 2)"
    )
    parser.add_argument(
        "--naive-full", action="store_true", help="time the naive chain over every node (slow: ~5 s per node)"
    )
    parser.add_argument(
        "--embedded-pairs", type=int, default=None, help="A/B pairs of the embedded comparison (default 3, quick 1)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (projects, worker logs, py-spy stacks)"
    )
    parser.add_argument(
        "--no-cpu-profile", action="store_true", help="skip the extra py-spy-sampled run (where the CPU goes)"
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="only re-render the doc and charts from a saved benchmarks.json (no measuring)",
    )
    parser.add_argument(
        "--redis-db",
        type=int,
        default=None,
        help="Redis DB for the runs (must be empty, with no clients); default: the first free DB from 9 up. "
        "R4 uses another free one.",
    )
    parser.add_argument(
        "--recovery",
        action="store_true",
        help="also measure recovery: a run whose producer worker is SIGKILLed at 50%% of its nodes (default off)",
    )
    parser.add_argument(
        "--recovery-size", type=int, default=200, help="models in the recovery scenario's project (default 200)"
    )
    args = parser.parse_args(argv)
    try:
        parts = parse_parts(args.only)
        sizes = {
            name: parse_sizes(given) if (given := getattr(args, name)) else (p.quick_sizes if args.quick else p.sizes)
            for name, p in PROFILES.items()
        }
        if args.sizes:
            sizes["light"] = sizes["heavy"] = parse_sizes(args.sizes)
    except ValueError as exc:
        parser.error(str(exc))
    if args.recovery_size < 1:
        parser.error("--recovery-size needs a positive model count")
    if args.redis_db is not None and not 0 <= args.redis_db < 16:
        parser.error("--redis-db must be between 0 and 15")
    return Config(
        parts=parts,
        sizes=sizes,
        quick=args.quick,
        out=Path(args.out),
        reps=args.reps or (1 if args.quick else 3),
        threads=args.threads,
        seeds=args.seeds,
        naive_sample=args.naive_sample or (2 if args.quick else 6),
        naive_full=args.naive_full,
        redis_db=args.redis_db,
        embedded_pairs=args.embedded_pairs or (1 if args.quick else 3),
        cpu_profile=not args.no_cpu_profile,
        keep=args.keep,
        from_json=args.from_json,
        recovery=args.recovery,
        recovery_size=args.recovery_size,
    )


def log(message: str) -> None:
    """Print one progress line with the time."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Measure the selected parts, write the doc, print each target's verdict."""
    config = parse_args(argv)
    if config.from_json is not None:
        saved = json.loads(config.from_json.read_text())
        for data in saved.get("cases", {}).values():
            data["summary"] = summarize_case(data)  # the summaries follow the report's current code
        if saved.get("embedded"):
            saved["embedded"]["summary"] = summarize_embedded(saved["embedded"])
        path = write_markdown(saved, config.out)
        log(f"re-rendered {path} from {config.from_json}")
        return 0
    signal.signal(signal.SIGTERM, _exit_on_signal)
    started = time.time()
    results: dict[str, Any] = {
        "command": "python -m benchmarks" + ("" if not sys.argv[1:] else " " + shlex.join(sys.argv[1:])),
        "started_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "config": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items() if k != "from_json"
        },
        "machine": machine(),
        "versions": versions(),
        "cases": {},
        "scale": [],
    }
    root = Path(tempfile.mkdtemp(prefix="dbt-celery-bench-"))
    ok = False
    try:
        if config.cases or config.recovery:
            run_db, scale_db = free_databases(config.redis_db)
            results["config"]["redis_db"], results["config"]["scale_db"] = run_db, scale_db
            log(f"Redis DB {run_db} for the runs, DB {scale_db} for R4 (both empty, no other clients)")
            run_redis_parts(config, root, results, run_db)
            run_scale(results, scale_db)
        if "embedded" in config.parts:
            log(f"embedded default: examples/jaffle_shop, {config.embedded_pairs} pair(s)")
            results["embedded"] = data = measure_embedded(root / "embedded", config.embedded_pairs, log)
            for line in embedded_lines(data["summary"]):
                print(line, flush=True)
        ok = True
    finally:
        if ok and not config.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            log(f"{'failed; ' if not ok else ''}worker logs, projects and py-spy stacks kept in {root}")
    results["duration"] = time.time() - started
    results["machine"]["load_end"] = _load()
    path = write_markdown(results, config.out)
    log(f"wrote {path} and its charts in {config.out} ({results['duration'] / 60:.1f} min)")
    for key, (met, value) in targets(results).items():
        verdict = "n/a" if met is None else ("met" if met else "NOT MET")
        print(f"  {verdict:8} {TARGETS[key]}: {value}")
    return 0


def free_databases(wanted: int | None) -> tuple[int, int]:
    """Two Redis DBs that hold no keys and have no client connected (the machine may be shared)."""
    client = redis.Redis.from_url(REDIS_HOST)
    databases = int(client.config_get("databases").get("databases", 16))
    me = str(client.client_id())
    used = {int(entry["db"]) for entry in client.client_list() if entry["id"] != me}
    used |= {int(name[2:]) for name in client.info("keyspace")}

    def free(db: int) -> bool:
        return db not in used and 0 < db < databases

    if wanted is not None and not free(wanted):
        raise SystemExit(f"Redis DB {wanted} is in use (keys or connected clients); pick a free one or omit --redis-db")
    candidates = [db for db in [*range(9, databases), *range(1, 9)] if free(db)]
    run_db = wanted if wanted is not None else (candidates[0] if candidates else None)
    scale = [db for db in candidates if db != run_db]
    if run_db is None or not scale:
        raise SystemExit(f"no two free Redis databases (in use: {sorted(used)})")
    return run_db, scale[0]


@dataclasses.dataclass
class Bench:
    """Everything a measurement against the Redis workers needs."""

    config: Config
    root: Path
    app: Any
    workers: Workers
    client: redis.Redis
    counter: ReadCounter
    events: EventLog
    workspaces: Path
    #: (project folder, nodes, consumer RSS after the run) for every dbt-celery run, in order: does it grow?
    rss_trace: list[tuple[str, int, int]] = dataclasses.field(default_factory=list)

    def celery(self, project: Project, db: Path) -> dict[str, Any]:
        """One measured dbt-celery run (see :func:`benchmarks.measure.measure_celery`)."""
        result = measure_celery(
            self.app,
            self.workers,
            self.client,
            self.counter,
            project,
            db,
            self.config.threads,
            self.workspaces,
            self.events,
        )
        self.workers.check()
        self.rss_trace.append((project.path.name, result["nodes"], result["consumer_rss"]))
        return result


def run_redis_parts(config: Config, root: Path, results: dict[str, Any], run_db: int) -> None:
    """Every case against the harness's own Redis workers, then the CPU profile, the memory floor, recovery."""
    url = f"{REDIS_HOST}/{run_db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    workspaces = root / "workspaces"
    env = {
        "CELERY_BROKER_URL": url,
        "CELERY_RESULT_BACKEND": url,
        "CELERY_CONFIG_MODULE": "dbt_celery.celery.no_config",
        "DBT_CELERY_WORKSPACE_DIR": str(workspaces),
        **dbt_env(),
    }
    os.environ.update(dbt_env())
    app = create_app(settings_from_env(env))
    counter = ReadCounter(app)
    try:
        log(f"starting workers on {url} (logs in {root / 'logs'})")
        with EventLog(app) as events, Workers(app, env, root / "logs") as workers:
            bench = Bench(config, root, app, workers, client, counter, events, workspaces)
            results["consumer_probe_start"] = workers.probe("consumer")
            results["producer_probe_start"] = workers.probe("producer")
            warm = generate(PROFILES["light"].shape(6, seeds=1), root / "warmup")
            warm.write_profile(warm.database, config.threads)
            dbt_cli(warm, ["parse"])
            for _ in range(2):
                bench.celery(warm, warm.database)
            log("workers warm")
            results["idle_commands_per_second"] = idle_command_rate(client)
            projects: dict[str, Project] = {}
            for profile, models in config.cases:
                key = case_key(profile, models)
                data, projects[key] = measure_case(bench, profile, models)
                data["summary"] = summarize_case(data)
                results["cases"][key] = data
                for line in ratio_lines(key, data["summary"]):
                    print(line, flush=True)
            if config.cpu_profile and projects:
                key = profiled_case(list(projects))
                results["cpu_profile"] = profile_case(bench, key, projects[key])
            results["consumer_rss_trace"] = bench.rss_trace
            results["consumer_probe_end"] = workers.probe("consumer")
            results["producer_probe_end"] = workers.probe("producer")
            executions = max((c["summary"]["executions_total"] for c in results["cases"].values()), default=400)
            log(f"memory floor: a bare celery worker of a trivial app, {executions} no-op tasks")
            results["floor"] = measure_floor(app, env, root / "logs", events, tasks=executions)
            settle_late_executions(events)
            for data in results["cases"].values():
                data["summary"] = summarize_case(data)
            workers.check()
            if config.recovery:  # last: it kills and restarts the producer worker
                results["recovery"] = data = run_recovery(config, root, app, workers, workspaces)
                for line in recovery_lines(data):
                    print(line, flush=True)
                workers.check()
    finally:
        client.flushdb()
        app.close()


def profiled_case(keys: list[str]) -> str:
    """The case the CPU profile samples: light 1000, else the largest light case, else the first one measured."""
    if PROFILED_CASE in keys:
        return PROFILED_CASE
    light = [key for key in keys if key.startswith("light/")]
    return max(light, key=lambda key: int(key.split("/")[1])) if light else keys[0]


def settle_late_executions(events: EventLog) -> None:
    """Wait until the last run's waiting copies have run (their countdown), then count them per run."""
    wait = events.last_end + DEFAULT_IDLE_WAIT + 3 - time.time()
    if wait > 0:
        log(f"waiting {wait:.0f} s for the waiting consumer copies still on their countdown, to count them")
        time.sleep(wait)
    events.count_late()


def run_scale(results: dict[str, Any], scale_db: int) -> None:
    """R4: plan, enqueue and record writes of synthetic graphs, no dbt."""
    log("R4: scale without dbt")
    for nodes in SCALE_SIZES:
        row = measure_scale(f"{REDIS_HOST}/{scale_db}", nodes)
        results["scale"].append(row)
        print(
            f"  R4 {nodes:6,} nodes: plan+enqueue {row['plan_enqueue']:.2f} s ({row['roots']} roots), "
            f"{nodes:,} writes {row['writes']:.2f} s ({row['write_us']:.0f} µs each; fenced {row['fenced_writes']:.2f} s, "
            f"direct SET {row['direct_writes']:.2f} s)",
            flush=True,
        )


def prepare_project(root: Path, profile: str, models: int, seeds: int, threads: int) -> Project:
    """Generate one case's project and parse it once, untimed (partial-parse state both approaches reuse)."""
    project = generate(PROFILES[profile].shape(models, seeds), root / "projects")
    project.write_profile(fresh_db(project.database), threads)
    parsed = dbt_cli(project, ["parse"])
    if parsed.returncode != 0:
        raise RuntimeError(f"dbt parse failed on the {profile} {models}-model project:\n{parsed.stdout[-3000:]}")
    return project


def measure_case(bench: Bench, profile: str, models: int) -> tuple[dict[str, Any], Project]:
    """One profile at one size: alternating A/B pairs, then the diagnostic and naive runs it gets."""
    config, root = bench.config, bench.root
    project = prepare_project(root, profile, models, config.seeds, config.threads)
    pairs = config.reps_for(models)
    log(f"{profile} {models} models ({len(project.nodes)} nodes): {pairs} A/B pair(s)")
    data: dict[str, Any] = {
        "profile": profile,
        "models": models,
        "nodes": len(project.nodes),
        "rows": project.shape.rows,
        "materialized": project.shape.materialized,
        "depends_on_edges": sum(len(node.parents) for node in project.nodes),
        "cli": [],
        "celery": [],
    }
    # One database path for every build of a case (each starts from an empty file): a new path would
    # change dbt's profile hash and make every build parse the whole project again.
    db = project.database
    for rep in range(pairs):
        order = ("cli", "celery") if rep % 2 == 0 else ("celery", "cli")
        for kind in order:
            result = measure_cli(project, db, config.threads) if kind == "cli" else bench.celery(project, db)
            data[kind].append(result)
            extra = f" ({result['executions']['executions_mean']:.2f} executions/node)" if kind == "celery" else ""
            log(f"  {kind:6} pair {rep + 1}: {result['wall']:.2f} s{extra}")
    if config.alone_for(profile, models):
        data["producer_alone"] = measure_producer_alone(
            bench.app, bench.workers, project, db, config.threads, bench.workspaces
        )
        log(
            f"  diagnostic, consumers paused: producer done {data['producer_alone']['to_producer_finished']:.2f} s after submit"
        )
    if PROFILES[profile].naive:
        # The naive baseline runs on the database the last measurement built (every parent exists).
        if config.naive_full:
            project.write_profile(fresh_db(db), config.threads)
            nodes = list(project.nodes)
        else:
            nodes = sample_nodes(project.nodes, config.naive_sample)
        log(f"  naive: {len(nodes)} node(s){'' if config.naive_full else ' (sample)'}, ~5 s each")
        data["naive"] = {
            **measure_naive(bench.app, project, nodes, config.threads, root / "naive-target"),
            "full": config.naive_full,
        }
    fresh_db(db)
    return data, project


def profile_case(bench: Bench, key: str, project: Project) -> dict[str, Any]:
    """One more run of a case, each worker sampled by py-spy, and a plain build under py-spy: where the CPU goes."""
    if py_spy() is None:
        log("CPU profile skipped: py-spy is not installed (pip install py-spy)")
        return {"case": key, "error": "py-spy is not installed"}
    folder = bench.root / "profile"
    folder.mkdir(exist_ok=True)
    log(f"CPU profile: one more dbt-celery run of {key} with py-spy on both workers, and a plain build under py-spy")
    db = project.database
    samplers = {role: Sampler(bench.workers.pid(role), folder / f"{role}.txt") for role in ("producer", "consumer")}
    for sampler in samplers.values():
        sampler.__enter__()
    try:
        time.sleep(1.0)  # py-spy attaches
        run = bench.celery(project, db)
    finally:
        for sampler in samplers.values():
            sampler.__exit__(None, None, None)
    project.write_profile(fresh_db(db), bench.config.threads)
    plain_out = folder / "cli.txt"
    command = [str(Path(sys.executable).with_name("dbt")), "build", "--threads", str(bench.config.threads)]
    command += ["--project-dir", str(project.path), "--profiles-dir", str(project.path)]
    done = run_timed(record_command(command, plain_out), project.path, {**os.environ, **dbt_env()})
    fresh_db(db)
    cli = (
        summarize_collapsed(plain_out.read_text(errors="replace").splitlines())
        if done.returncode == 0 and plain_out.is_file()
        else {"error": done.output[-500:]}
    )
    return {
        "case": key,
        "wall": run["wall"],
        "cli_wall": done.wall,
        "cpu": run["cpu"],
        "cli_cpu": done.cpu,
        "rate": samplers["producer"].rate,
        "producer": samplers["producer"].summary(),
        "consumer": samplers["consumer"].summary(),
        "cli": cli,
    }


def run_recovery(config: Config, root: Path, app: Any, workers: Workers, workspaces: Path) -> dict[str, Any]:
    """The recovery scenario on a heavy project (see :mod:`benchmarks.recovery`)."""
    size = config.recovery_size
    project = prepare_project(root, "heavy", size, config.seeds, config.threads)
    log(f"recovery: {size} models ({len(project.nodes)} nodes), undisturbed run, then the producer killed at 50%")
    dbs = root / "db"
    dbs.mkdir(exist_ok=True)
    return measure_recovery(app, workers, project, dbs, config.threads, workspaces)


def machine() -> dict[str, Any]:
    """CPUs, memory, platform and load of this machine."""
    cpu_model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        total_kb = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gb": total_kb / 1024 / 1024,
        "platform": platform.platform(),
        "load_start": _load(),
    }


def versions() -> dict[str, str]:
    """Versions of Python, the packages measured and the Redis server."""
    found = {"python": platform.python_version()}
    for package in ("dbt-celery", "celery", "kombu", "redis", "dbt-core", "dbt-duckdb", "duckdb", "py-spy"):
        try:
            found[package if package != "redis" else "redis-py"] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    try:
        found["redis server"] = redis.Redis.from_url(REDIS_HOST).info("server")["redis_version"]
    except redis.RedisError as exc:
        found["redis server"] = f"unreachable ({exc})"
    return found


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the workers


if __name__ == "__main__":
    sys.exit(main())
