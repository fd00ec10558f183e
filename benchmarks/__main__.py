"""``python -m benchmarks``: every dbt-celery benchmark in one command, results in docs/.

    python -m benchmarks                      # sizes 50,200 (about 10 minutes on 2 cores)
    python -m benchmarks --sizes 20 --quick   # a quick check while developing
    python -m benchmarks --sizes 50,200,1000 --out docs/
    python -m benchmarks --recovery           # also: producer SIGKILLed mid-build (200 models)

Needs Redis on 127.0.0.1:6379; uses (and flushes) only two databases that are empty and
have no client (``--redis-db`` names the first). Starts its own two workers and always
stops them, also on error or Ctrl-C. ``--from-json docs/benchmarks.json`` re-renders the
doc from saved results without measuring.
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

from benchmarks.generate import DEFAULT_ROWS, Shape, generate
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
    sample_nodes,
)
from benchmarks.recovery import measure_recovery, recovery_lines
from benchmarks.report import TARGETS, ratio_lines, summarize_size, targets, write_markdown
from benchmarks.scale import measure_scale
from benchmarks.workers import Workers
from dbt_celery.celery.config import create_app, settings_from_env

REDIS_HOST = "redis://127.0.0.1:6379"
SCALE_SIZES = (1_000, 5_000, 10_000)
#: Sizes from which on one repetition is enough (a plain build takes minutes there).
LARGE = 500


@dataclasses.dataclass(frozen=True)
class Config:
    """What one invocation of the harness measures."""

    sizes: tuple[int, ...]
    quick: bool
    out: Path
    reps: int
    threads: int
    rows: int
    seeds: int
    naive_sample: int
    naive_full: bool
    redis_db: int | None
    from_json: Path | None = None
    recovery: bool = False
    recovery_size: int = 200
    wait_interval: float = WAIT_INTERVAL

    def reps_for(self, size: int) -> int:
        """Repetitions at one size (one at LARGE models and beyond)."""
        return 1 if size >= LARGE else self.reps


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="50,200", help="model counts, comma-separated (default 50,200)")
    parser.add_argument("--quick", action="store_true", help="one repetition, 2 naive nodes: for development")
    parser.add_argument("--out", default="docs", help="folder for benchmarks.md and the charts (default docs/)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per size (default 3, quick 1)")
    parser.add_argument("--threads", type=int, default=4, help="dbt threads for both approaches (default 4)")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows each model builds (per-model cost)")
    parser.add_argument("--seeds", type=int, default=2, help="seed files in each project (default 2)")
    parser.add_argument(
        "--naive-sample", type=int, default=None, help="nodes timed for the naive baseline (default 6, quick 2)"
    )
    parser.add_argument(
        "--naive-full", action="store_true", help="time the naive chain over every node (slow: ~7 s per node)"
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
        sizes = tuple(int(part) for part in args.sizes.split(",") if part.strip())
    except ValueError:
        parser.error(f"--sizes must be integers separated by commas, not {args.sizes!r}")
    if not sizes or min(sizes) < 1:
        parser.error("--sizes needs at least one positive model count")
    if args.recovery_size < 1:
        parser.error("--recovery-size needs a positive model count")
    if args.redis_db is not None and not 0 <= args.redis_db < 16:
        parser.error("--redis-db must be between 0 and 15")
    return Config(
        sizes=sizes,
        quick=args.quick,
        out=Path(args.out),
        reps=args.reps or (1 if args.quick else 3),
        threads=args.threads,
        rows=args.rows,
        seeds=args.seeds,
        naive_sample=args.naive_sample or (2 if args.quick else 6),
        naive_full=args.naive_full,
        redis_db=args.redis_db,
        from_json=args.from_json,
        recovery=args.recovery,
        recovery_size=args.recovery_size,
    )


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    if config.from_json is not None:
        results = json.loads(config.from_json.read_text())
        path = write_markdown(results, config.out)
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
        "sizes": {},
    }
    run_db, scale_db = free_databases(config.redis_db)
    results["config"]["redis_db"], results["config"]["scale_db"] = run_db, scale_db
    log(f"Redis DB {run_db} for the runs, DB {scale_db} for R4 (both empty, no other clients)")
    root = Path(tempfile.mkdtemp(prefix="dbt-celery-bench-"))
    ok = False
    try:
        run_all(config, root, results, run_db, scale_db)
        ok = True
    finally:
        if ok:
            shutil.rmtree(root, ignore_errors=True)
        else:
            log(f"failed; worker logs and projects kept in {root}")
    results["duration"] = time.time() - started
    results["machine"]["load_end"] = _load()
    path = write_markdown(results, config.out)
    log(f"wrote {path}, {config.out / 'benchmarks_ratios.png'}, {config.out / 'benchmarks_lag.png'}")
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


def run_all(config: Config, root: Path, results: dict[str, Any], run_db: int, scale_db: int) -> None:
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
        with Workers(app, env, root / "logs") as workers:
            results["consumer_probe_start"] = workers.probe("consumer")
            warm = generate(Shape(6, seeds=1, layers=2, rows=1000), root / "warmup")
            warm.write_profile(root / "warmup.duckdb", config.threads)
            dbt_cli(warm, ["parse"])
            for _ in range(2):
                measure_celery(app, workers, client, counter, warm, root / "warmup.duckdb", config.threads, workspaces)
            log("workers warm")
            results["idle_commands_per_second"] = idle_command_rate(client)
            for size in config.sizes:
                results["sizes"][str(size)] = data = measure_size(
                    config, root, app, workers, client, counter, workspaces, size
                )
                data["summary"] = summarize_size(data)
                for line in ratio_lines(size, data["summary"]):
                    print(line, flush=True)
            results["consumer_probe_end"] = workers.probe("consumer")
            results["producer_probe_end"] = workers.probe("producer")
            workers.check()
            if config.recovery:  # last: it kills and restarts the producer worker
                results["recovery"] = data = run_recovery(config, root, app, workers, workspaces)
                for line in recovery_lines(data):
                    print(line, flush=True)
                workers.check()
    finally:
        client.flushdb()
        app.close()
    log("R4: scale without dbt")
    results["scale"] = []
    for nodes in SCALE_SIZES:
        row = measure_scale(f"{REDIS_HOST}/{scale_db}", nodes)
        results["scale"].append(row)
        print(
            f"  R4 {nodes:6,} nodes: plan+enqueue {row['plan_enqueue']:.2f} s ({row['roots']} roots), "
            f"{nodes:,} writes {row['writes']:.2f} s ({row['write_us']:.0f} µs each; fenced {row['fenced_writes']:.2f} s, "
            f"direct SET {row['direct_writes']:.2f} s)",
            flush=True,
        )


def measure_size(
    config: Config,
    root: Path,
    app: Any,
    workers: Workers,
    client: redis.Redis,
    counter: ReadCounter,
    workspaces: Path,
    size: int,
) -> dict[str, Any]:
    project = generate(Shape(size, seeds=config.seeds, rows=config.rows), root / "projects")
    dbs = root / "db"
    dbs.mkdir(exist_ok=True)
    project.write_profile(dbs / "parse.duckdb", config.threads)
    parsed = dbt_cli(project, ["parse"])  # untimed: partial-parse state both approaches reuse
    if parsed.returncode != 0:
        raise RuntimeError(f"dbt parse failed on the {size}-model project:\n{parsed.stdout[-3000:]}")
    log(f"{size} models ({len(project.nodes)} nodes): {config.reps_for(size)} repetition(s)")
    data: dict[str, Any] = {
        "models": size,
        "nodes": len(project.nodes),
        "depends_on_edges": sum(len(node.parents) for node in project.nodes),
        "cli": [],
        "celery": [],
    }
    db = dbs / "none"
    for rep in range(config.reps_for(size)):
        order = ("cli", "celery") if rep % 2 == 0 else ("celery", "cli")
        for kind in order:
            previous, db = db, dbs / f"{size}-{kind}-{rep}.duckdb"
            fresh_db(previous)
            if kind == "cli":
                result = measure_cli(project, db, config.threads)
            else:
                result = measure_celery(app, workers, client, counter, project, db, config.threads, workspaces)
                workers.check()
            data[kind].append(result)
            log(f"  {kind:6} rep {rep + 1}: {result['wall']:.2f} s")
    fresh_db(db)
    db = dbs / f"{size}-alone.duckdb"
    data["producer_alone"] = measure_producer_alone(app, workers, project, db, config.threads, workspaces)
    log(
        f"  diagnostic, consumers paused: producer done {data['producer_alone']['to_producer_finished']:.2f} s after submit"
    )
    # The naive baseline runs on the database the last measurement built (every parent exists).
    if config.naive_full:
        project.write_profile(fresh_db(dbs / f"{size}-naive.duckdb"), config.threads)
        nodes = list(project.nodes)
    else:
        nodes = sample_nodes(project.nodes, config.naive_sample)
    log(f"  naive: {len(nodes)} node(s){'' if config.naive_full else ' (sample)'}, ~7 s each")
    data["naive"] = {
        **measure_naive(app, project, nodes, config.threads, root / "naive-target"),
        "full": config.naive_full,
    }
    fresh_db(db)
    return data


def run_recovery(config: Config, root: Path, app: Any, workers: Workers, workspaces: Path) -> dict[str, Any]:
    size = config.recovery_size
    project = generate(Shape(size, seeds=config.seeds, rows=config.rows), root / "projects")
    dbs = root / "db"
    dbs.mkdir(exist_ok=True)
    project.write_profile(dbs / "parse.duckdb", config.threads)
    parsed = dbt_cli(project, ["parse"])  # untimed, as for the main measurement
    if parsed.returncode != 0:
        raise RuntimeError(f"dbt parse failed on the {size}-model project:\n{parsed.stdout[-3000:]}")
    log(f"recovery: {size} models ({len(project.nodes)} nodes), undisturbed run, then the producer killed at 50%")
    return measure_recovery(app, workers, project, dbs, config.threads, workspaces)


def machine() -> dict[str, Any]:
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
    found = {"python": platform.python_version()}
    for package in ("dbt-celery", "celery", "kombu", "redis", "dbt-core", "dbt-duckdb", "duckdb"):
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
