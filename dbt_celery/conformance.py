"""Conformance: does a dbt-celery run end every node where plain ``dbt build`` does?

:func:`compare` runs a plain ``dbt build`` (a dbt CLI process) and a dbt-celery run of
the same selection, then compares them node by node: dbt-celery's ``dbt_status`` must be
the status in the reference ``run_results.json``, and its final status the outcome that
status maps to (:data:`dbt_celery.core.records.DBT_STATUS_STATES`; a build skip is an
upstream failure). A node on one side only is a difference. ``dbt-celery conformance``
runs it on any project.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import uuid
from typing import Any, Iterator

from celery import Celery

from dbt_celery.core.records import state_for
from dbt_celery.core.spec import RunSpec
from dbt_celery.dbt.commands import Workspace, build_command
from dbt_celery.dbt.invocation import DbtInvocation
from dbt_celery.dbt.project import BUILDABLE_TYPES


@dataclasses.dataclass(frozen=True)
class Difference:
    """One node on which the two runs disagree."""

    unique_id: str
    reference: str | None
    candidate: str | None
    detail: str


@dataclasses.dataclass(frozen=True)
class ConformanceReport:
    """The reference statuses, the candidate's, and every difference between them."""

    reference: dict[str, str]
    candidate: dict[str, dict[str, Any]]
    differences: list[Difference]
    run_id: str | None = None
    candidate_error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the runs agree on every node."""
        return not self.differences

    def to_dict(self) -> dict[str, Any]:
        """The JSON document ``dbt-celery conformance --json`` prints."""
        return {
            "ok": self.ok,
            "run_id": self.run_id,
            "candidate_error": self.candidate_error,
            "nodes": len(set(self.reference) | set(self.candidate)),
            "differences": [dataclasses.asdict(d) for d in self.differences],
        }


def reference_statuses(spec: RunSpec) -> dict[str, str]:
    """Run plain ``dbt build`` as a dbt CLI process; return each built node's raw status.

    The command line is the producer's (:func:`build_command`): the spec's selection, vars,
    ``--full-refresh``, ``--empty`` and threads, so both sides build the same thing.
    """
    workspace = Workspace.create(spec, f"conformance-{uuid.uuid4()}", "reference")
    invocation = DbtInvocation(build_command(spec, workspace), mode="subprocess", cwd=spec.project_dir)
    invocation.run()
    if not workspace.run_results.is_file():
        return {}
    results = json.loads(workspace.run_results.read_text()).get("results", [])
    return {r["unique_id"]: r["status"] for r in results if r["unique_id"].split(".", 1)[0] in BUILDABLE_TYPES}


def compare(
    reference: RunSpec, candidate: RunSpec, *, app: Celery | None = None, timeout: float = 600
) -> ConformanceReport:
    """Build with plain dbt (``reference``) and with dbt-celery (``candidate``); compare the nodes."""
    from dbt_celery.run import submit

    expected = reference_statuses(reference)
    with _celery_app(app) as celery_app:
        status = submit(candidate, app=celery_app).wait(timeout)
    got = {uid: {"status": node.status.value, "dbt_status": node.dbt_status} for uid, node in status.nodes.items()}
    return ConformanceReport(expected, got, differences(expected, got), status.run_id, status.error)


def differences(expected: dict[str, str], got: dict[str, dict[str, Any]]) -> list[Difference]:
    """Every node whose candidate result does not match the reference status."""
    found = []
    for uid in sorted(set(expected) | set(got)):
        if uid not in got:
            found.append(Difference(uid, expected[uid], None, "plain dbt build ran it; dbt-celery did not"))
            continue
        if uid not in expected:
            found.append(Difference(uid, None, got[uid]["status"], "dbt-celery ran it; plain dbt build did not"))
            continue
        want_status = state_for(expected[uid], upstream_failed=True).value
        node = got[uid]
        if node["dbt_status"] != expected[uid] or node["status"] != want_status:
            found.append(
                Difference(
                    uid,
                    expected[uid],
                    f"{node['status']} (dbt {node['dbt_status']})",
                    f"expected {want_status} with dbt status {expected[uid]}",
                )
            )
    return found


@contextlib.contextmanager
def _celery_app(app: Celery | None) -> Iterator[Celery]:
    if app is not None:
        yield app
        return
    from dbt_celery.celery.config import state_dir
    from dbt_celery.celery.embedded import EmbeddedWorkers

    with EmbeddedWorkers(state_dir()) as workers:
        yield workers.app
