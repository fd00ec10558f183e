"""A run's own artifacts, and rerunning what failed: ``DbtRun.artifacts()``, ``dbt retry``, ``dbt-celery retry``.

One run of the conformance features project (which has failing models, tests and unit
tests) on the session's Redis workers, then everything a user does with what it left:

* the combined ``run_results.json`` and ``manifest.json`` load with dbt's own artifact
  classes, and hold one result per planned node;
* plain ``dbt retry --state DIR`` against them (a dbt CLI process) runs exactly the nodes
  that did not pass in the run;
* ``dbt-celery retry RUN_ID`` plans exactly those nodes, in one new run;
* ``--select result:error+ --state DIR`` selects the same nodes in plain dbt and in dbt-celery.

The recovery tests in test_conformance.py check that a node repaired by its consumer's
inline build carries the repair in these artifacts.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from dbt_celery.conformance import compare
from dbt_celery.core.records import NodeState
from dbt_celery.core.spec import RunSpec
from dbt_celery.dbt.invocation import dbt_executable
from dbt_celery.errors import ConfigurationError
from dbt_celery.run import DbtRun, retry, submit
from tests.e2e.test_cli import dbt_celery
from tests.e2e.test_conformance import FEATURES, RUN_TIMEOUT, check, describe
from tests.helpers import copy_project

NOT_PASSING = {NodeState.FAILED, NodeState.UPSTREAM_FAILED, NodeState.NOT_RUN}


def user_profile(project: Path, db: Path) -> Path:
    """A profiles.yml of the user's own, beside the project (what ``dbt retry`` reads too)."""
    profile = {"features": {"target": "dev", "outputs": {"dev": {"type": "duckdb", "path": str(db), "threads": 4}}}}
    (project / "profiles.yml").write_text(yaml.safe_dump(profile))
    return project


def dbt_retry(project: Path, state: Path, workdir: Path) -> set[str]:
    """Run plain ``dbt retry --state`` (a dbt CLI process); return the nodes it ran."""
    target = workdir / "retry-target"
    command = [
        dbt_executable(), "retry", "--state", str(state), "--project-dir", str(project),
        "--profiles-dir", str(project), "--target-path", str(target), "--log-path", str(workdir / "retry-logs"),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert (target / "run_results.json").is_file(), done.stdout[-3000:]
    return {result["unique_id"] for result in json.loads((target / "run_results.json").read_text())["results"]}


@pytest.mark.timeout(4 * RUN_TIMEOUT + 60)
def test_a_runs_artifacts_feed_dbt_retry_and_dbt_celery_retry(redis_workers, redis_app, worker_env, tmp_path):
    from dbt.artifacts.schemas.run import RunResultsArtifact
    from dbt.contracts.graph.manifest import WritableManifest

    project = user_profile(copy_project(FEATURES, tmp_path), tmp_path / "candidate.duckdb")
    # The run and its retries build in subprocess mode; the result:error+ comparison below in-process.
    spec = RunSpec(project_dir=str(project), profiles_dir=str(project), retries=0, invocation="subprocess")
    run = submit(spec, app=redis_app)
    with pytest.raises(ConfigurationError, match="still queued: retry it once it has ended"):
        retry(run.id, app=redis_app)
    status = run.wait(RUN_TIMEOUT)
    failed = {uid for uid, node in status.nodes.items() if node.status in NOT_PASSING}
    assert len(failed) == 10, failed  # the fixture's errors, failures and their skipped descendants

    # The combined artifacts, from another handle (as any process would), in dbt's own schema.
    artifacts = DbtRun.restore(run.id, app=redis_app).artifacts()
    state = tmp_path / "state"
    artifacts.write(state)
    results = RunResultsArtifact.read_and_check_versions(str(state / "run_results.json"))
    assert {r.unique_id for r in results.results} == set(status.nodes)
    assert {r.unique_id for r in results.results if str(r.status) in ("error", "fail", "skipped")} == failed
    assert results.args["which"] == "build"
    manifest = WritableManifest.read_and_check_versions(str(state / "manifest.json"))
    assert set(status.nodes) - {uid for uid in status.nodes if uid.startswith("unit_test.")} <= set(
        manifest.nodes
    ) | set(manifest.exposures)
    assert sorted(failed) == artifacts.retryable()

    # The CLI writes the same two files.
    written = dbt_celery("artifacts", run.id, "--out", str(tmp_path / "cli-state"), env=worker_env)
    assert written.returncode == 0, written.stderr
    assert (
        json.loads((tmp_path / "cli-state" / "run_results.json").read_text())["results"]
        == json.loads((state / "run_results.json").read_text())["results"]
    )

    # Plain dbt retry runs exactly what did not pass.
    assert dbt_retry(project, state, tmp_path) == failed

    # dbt-celery retry (the CLI, then the same from Python): one new run of exactly those
    # nodes (still broken, so they fail again, and the command exits 1 as `run` would).
    retried = dbt_celery("retry", run.id, "--json", env=worker_env, timeout=RUN_TIMEOUT)
    assert retried.returncode == 1, retried.stderr
    assert f"retrying {len(failed)} node(s) of run {run.id}" in retried.stderr
    document = json.loads(retried.stdout)
    assert document["run_id"] != run.id and set(document["nodes"]) == failed
    again = retry(run.id, app=redis_app)
    assert again is not None
    status_again = again.wait(RUN_TIMEOUT)
    assert {uid for uid, node in status_again.nodes.items() if node.status in NOT_PASSING} == failed
    assert again.spec().indirect_selection == "empty"

    # result:error+ against the run's artifacts selects the same in plain dbt and in dbt-celery:
    # the nodes that errored and everything below them (all of which the run skipped).
    options = {"state": str(state), "select": ("result:error+",)}
    reference = RunSpec(project_dir=str(project), profile={"type": "duckdb", "path": str(tmp_path / "r.duckdb")})
    candidate = RunSpec(project_dir=str(project), profiles_dir=str(project), retries=0)
    report = compare(
        dataclasses.replace(reference, **options),
        dataclasses.replace(candidate, **options),
        app=redis_app,
        timeout=RUN_TIMEOUT,
    )
    check(report, "--select result:error+ --state <the run's artifacts>")
    errored = {r.unique_id for r in results.results if str(r.status) == "error"}
    assert errored and errored <= set(report.reference) <= failed, describe(report)
