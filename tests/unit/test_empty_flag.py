"""``--empty`` travels from the CLI through the spec to every dbt command that accepts it.

dbt 1.11 accepts ``--empty`` on build, run and snapshot, and refuses it on seed and test
(``No such option``); a fallback must never pass a flag its command refuses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dbt_celery.cli import _parser, _spec_from_args
from dbt_celery.core.spec import RunSpec
from dbt_celery.dbt.commands import Workspace, build_command, fallback_command


@pytest.mark.parametrize("command", ["run", "conformance"])
def test_the_cli_puts_empty_into_the_spec(command, tmp_path):
    assert _spec_from_args(_parser().parse_args([command, str(tmp_path), "--empty"])).empty is True
    assert _spec_from_args(_parser().parse_args([command, str(tmp_path)])).empty is False


def test_empty_round_trips_through_json():
    spec = RunSpec(project_dir="/p", empty=True)
    assert RunSpec.from_json(spec.to_json()).empty is True


def test_the_producer_build_and_a_resumed_build_pass_empty(tmp_path: Path):
    spec, workspace = RunSpec(project_dir="/p", empty=True), Workspace(tmp_path)
    assert "--empty" in build_command(spec, workspace)
    assert "--empty" in build_command(spec, workspace, selectors=["model.p.a"])
    assert "--empty" not in build_command(RunSpec(project_dir="/p"), workspace)


@pytest.mark.parametrize(
    "resource_type, command, passes_empty",
    [("model", "run", True), ("snapshot", "snapshot", True), ("function", "build", True),
     ("seed", "seed", False), ("test", "test", False), ("unit_test", "test", False)],
)  # fmt: skip
def test_fallbacks_pass_empty_where_dbt_accepts_it(tmp_path: Path, resource_type, command, passes_empty):
    args = fallback_command(RunSpec(project_dir="/p", empty=True), Workspace(tmp_path), resource_type, "x")
    assert args[0] == command
    assert ("--empty" in args) is passes_empty
