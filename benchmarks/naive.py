"""Worker-side code of the benchmarks, loaded into the workers with ``--include``.

* ``benchmarks.naive_build``: the naive baseline, one task per dbt node that starts a
  new ``dbt build --select <node>`` process (chained along the DAG by the harness).
* ``bench_probe``: a remote-control command that reports what a worker process holds
  (RSS, whether dbt is imported), so the harness can look inside the consumer worker.

This module must not import dbt: it is loaded into the consumer worker too.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from celery import shared_task
from celery.worker.control import inspect_command

NAIVE_TASK = "benchmarks.naive_build"
NAIVE_QUEUE = "bench.naive"
#: Seconds one naive dbt process may take before the task gives up.
NAIVE_TIMEOUT = 600


class NaiveBuildFailed(Exception):
    """A naive per-node ``dbt build`` exited non-zero."""


@shared_task(name=NAIVE_TASK)
def naive_build(project_dir: str, selector: str, threads: int, target_path: str) -> dict[str, Any]:
    """Build one node in a new dbt process (``--indirect-selection empty``: that node only)."""
    dbt = str(Path(sys.executable).with_name("dbt"))
    command = [
        dbt, "build", "--select", selector, "--indirect-selection", "empty",
        "--project-dir", project_dir, "--profiles-dir", project_dir, "--threads", str(threads),
        "--target-path", target_path, "--log-path", os.path.join(target_path, "logs"),
    ]  # fmt: skip
    started = time.time()
    done = subprocess.run(command, cwd=project_dir, capture_output=True, text=True, timeout=NAIVE_TIMEOUT)
    if done.returncode != 0:
        raise NaiveBuildFailed(f"dbt build --select {selector} exited {done.returncode}: {done.stdout[-1500:]}")
    return {"selector": selector, "started_at": started, "seconds": time.time() - started}


@inspect_command()
def bench_probe(state: Any, **_: Any) -> dict[str, Any]:
    """Report this worker process's memory and whether dbt was ever imported in it."""
    dbt_modules = [name for name in sys.modules if name == "dbt" or name.startswith("dbt.")]
    return {
        "pid": os.getpid(),
        "dbt_imported": bool(dbt_modules),
        "dbt_modules": len(dbt_modules),
        "modules": len(sys.modules),
        "packages": sorted(
            {name.split(".")[0] for name in sys.modules if not name.startswith("_")} - set(sys.stdlib_module_names)
        ),
        "rss_bytes": _rss_bytes(),
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
