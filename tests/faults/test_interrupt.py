"""Ctrl-C of ``dbt-celery run`` on the embedded default: the run is cancelled, nothing is left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.faults.fault_fixtures import Audit, audited_spec


def cli(project: Path, audit: Audit, state: Path, sleep: float) -> subprocess.Popen[str]:
    spec = audited_spec(project, audit, sleep=sleep)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
    env |= {
        "DBT_CELERY_STATE_DIR": str(state),
        "CELERY_CONFIG_MODULE": "dbt_celery.celery.no_config",
        "PGPASSWORD": "x",
    }
    command = [
        sys.executable, "-m", "dbt_celery.cli", "run", str(project), "--profile-json", json.dumps(spec.profile),
        "--vars", json.dumps(dict(spec.vars)), "--json",
    ]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_ctrl_c_cancels_the_run_and_the_next_run_goes_through(audited_project, audit, tmp_path):
    state = tmp_path / "state"
    first = cli(audited_project, audit, state, sleep=2.0)
    deadline = time.monotonic() + 90
    while not audit.rows():  # the first model is being built
        assert time.monotonic() < deadline and first.poll() is None, first.stderr.read() if first.stderr else ""
        time.sleep(0.2)
    workers = psutil.Process(first.pid).children(recursive=True)
    assert len(workers) >= 2  # the embedded producer and consumer workers (and their pools)

    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=90)
    interrupted_at = time.time()
    assert first.returncode == 130, err
    document = json.loads(out)
    assert document["status"] == "cancelled", document
    assert "cancelled" in {node["status"] for node in document["nodes"].values()}
    # No orphan: every worker process of the first CLI is gone.
    assert not [p for p in workers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    # dbt started nothing after the interrupt was handled.
    assert not [row for row in audit.rows() if row.phase == "start" and row.at.timestamp() > interrupted_at]

    second = cli(audited_project, audit, state, sleep=0.1)
    out, err = second.communicate(timeout=180)
    assert second.returncode == 0, err
    assert json.loads(out)["status"] == "success"
    assert audit.overlaps() == []
