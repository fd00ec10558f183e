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
