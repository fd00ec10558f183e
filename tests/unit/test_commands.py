"""Per-run workspaces: pruned once their run's records have expired (no dbt process)."""

from __future__ import annotations

import os
import time

from dbt_celery.core.spec import RunSpec
from dbt_celery.dbt.commands import WORKSPACE_ENV, Workspace, prune_workspaces


def test_old_run_workspaces_are_pruned_and_recent_ones_kept(tmp_path, monkeypatch):
    monkeypatch.setenv(WORKSPACE_ENV, str(tmp_path))
    spec = RunSpec(project_dir="/p")
    old, recent = Workspace.create(spec, "old-run", "producer-1"), Workspace.create(spec, "new-run", "producer-1")
    day_ago = time.time() - 86_400 - 60
    os.utime(old.root.parent, (day_ago, day_ago))
    assert prune_workspaces(spec, older_than=86_400) == [old.root.parent]
    assert not old.root.exists() and recent.run_results.parent.is_dir()


def test_the_build_carries_state_flags_and_a_rebuild_defers_to_the_folder_it_is_given(tmp_path):
    from dbt_celery.dbt.commands import build_command, fallback_command

    spec = RunSpec(project_dir="/p", state="/prod", defer=True, favor_state=True, select=("state:modified+",))
    workspace = Workspace(tmp_path)
    build = build_command(spec, workspace)
    assert build[build.index("--state") :][:4] == ["--state", "/prod", "--defer", "--favor-state"]
    assert "state:modified+" in build
    rebuild = fallback_command(spec, workspace, "model", "fqn:p.a", tmp_path / "state")
    assert rebuild[rebuild.index("--state") + 1] == str(tmp_path / "state") and "state:modified+" not in rebuild
    assert "--state" not in fallback_command(RunSpec(project_dir="/p", state="/prod"), workspace, "model", "fqn:p.a")
    # A list of exact nodes (a resumed build) takes no test in by indirect selection.
    exact = build_command(spec, workspace, ["fqn:p.a"])
    assert exact[exact.index("--select") :][:4] == ["--select", "fqn:p.a", "--indirect-selection", "empty"]


def test_state_without_drops_the_runs_own_nodes(tmp_path):
    import json

    from dbt_celery.dbt.fallback import state_without

    (tmp_path / "manifest.json").write_text(json.dumps({"nodes": {"model.p.a": {}, "model.p.b": {}}, "sources": {}}))
    folder = state_without(tmp_path, ["model.p.b", "model.p.z"], tmp_path / "copy")
    assert json.loads((folder / "manifest.json").read_text()) == {"nodes": {"model.p.a": {}}, "sources": {}}
