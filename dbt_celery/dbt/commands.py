"""The dbt command lines of a run, built from its :class:`RunSpec` and a private workspace.

Every invocation gets its own workspace (target path, log path, rendered profile) so
that runs on the same project never overwrite each other's artifacts. Fallback
commands carry only the user's run-level flags (target, vars, full refresh, empty), per
command type, never the producer's own (log format, selection).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from dbt_celery.core.profiles import PROFILE_NAME, profile_from_dict, write_profiles_dir
from dbt_celery.core.spec import RunSpec

#: Environment variable naming the folder that holds per-run dbt workspaces.
WORKSPACE_ENV = "DBT_CELERY_WORKSPACE_DIR"
PARTIAL_PARSE_FILE = "partial_parse.msgpack"

# The dbt command that rebuilds one node of each resource type on its own.
FALLBACK_COMMANDS = {
    "model": "run",
    "seed": "seed",
    "snapshot": "snapshot",
    "test": "test",
    "unit_test": "test",
    "function": "build",
    # Nothing to build: dbt reports them no-op; a build of the one node says so again.
    "exposure": "build",
    "saved_query": "build",
}
# Commands that accept --full-refresh.
_FULL_REFRESH_COMMANDS = {"build", "run", "seed"}
# Commands that accept --empty (dbt 1.11: not seed, which loads its file whole under
# `build --empty` too, nor test, which reads the tables the run built).
_EMPTY_COMMANDS = {"build", "run", "snapshot"}
# Make an empty selection an error instead of a silent success (dbt exits 0 otherwise).
_EMPTY_SELECTION_IS_ERROR = json.dumps({"error": ["NoNodesForSelectionCriteria"]})


def workspaces_root(spec: RunSpec) -> Path:
    """The folder holding one sub-folder per run (``DBT_CELERY_WORKSPACE_DIR``, else the project's target/)."""
    return Path(os.environ.get(WORKSPACE_ENV) or os.path.join(spec.project_dir, "target", "dbt_celery"))


def prune_workspaces(spec: RunSpec, older_than: float, now: float | None = None) -> list[Path]:
    """Remove the runs' folders untouched for ``older_than`` seconds (their records have expired)."""
    now = time.time() if now is None else now
    removed = []
    root = workspaces_root(spec)
    for run_dir in root.iterdir() if root.is_dir() else ():
        if run_dir.is_dir() and now - run_dir.stat().st_mtime > older_than:
            shutil.rmtree(run_dir, ignore_errors=True)
            removed.append(run_dir)
    return removed


@dataclasses.dataclass(frozen=True)
class Workspace:
    """The private folders of one dbt invocation."""

    root: Path

    def remove(self) -> None:
        """Delete the workspace (its logs and artifacts go with it)."""
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def target_path(self) -> Path:
        """dbt's --target-path for this invocation."""
        return self.root / "target"

    @property
    def log_path(self) -> Path:
        """dbt's --log-path for this invocation."""
        return self.root / "logs"

    @property
    def run_results(self) -> Path:
        """Where dbt writes run_results.json for this invocation."""
        return self.target_path / "run_results.json"

    @classmethod
    def create(cls, spec: RunSpec, run_id: str, label: str) -> Workspace:
        """Make the workspace for one invocation of a run, rendering a built-in profile."""
        root = workspaces_root(spec) / run_id / label
        workspace = cls(root)
        workspace.target_path.mkdir(parents=True, exist_ok=True)
        workspace.log_path.mkdir(parents=True, exist_ok=True)
        if spec.profile is not None:
            write_profiles_dir(profile_from_dict(spec.profile), root / "profile", spec.target)
        return workspace

    def profiles_dir(self, spec: RunSpec) -> str | None:
        """The --profiles-dir for this invocation, or None for dbt's default search."""
        if spec.profile is not None:
            return str(self.root / "profile")
        return spec.profiles_dir

    def adopt_partial_parse(self, project_dir: str) -> None:
        """Copy the project's partial-parse state in, so parsing starts warm."""
        source = Path(project_dir) / "target" / PARTIAL_PARSE_FILE
        if source.is_file():
            shutil.copyfile(source, self.target_path / PARTIAL_PARSE_FILE)

    def share_partial_parse(self, project_dir: str) -> None:
        """Publish this workspace's partial-parse state for the project's next runs."""
        produced = self.target_path / PARTIAL_PARSE_FILE
        if not produced.is_file():
            return
        destination = Path(project_dir) / "target"
        destination.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=destination, prefix=".partial_parse.")
        os.close(fd)
        shutil.copyfile(produced, tmp)
        os.replace(tmp, destination / PARTIAL_PARSE_FILE)


def common_args(spec: RunSpec, workspace: Workspace) -> list[str]:
    """Flags every command of the run takes: project, profile, target, paths, vars."""
    args = [
        "--project-dir", spec.project_dir,
        "--target-path", str(workspace.target_path),
        "--log-path", str(workspace.log_path),
    ]  # fmt: skip
    profiles_dir = workspace.profiles_dir(spec)
    if profiles_dir:
        args += ["--profiles-dir", profiles_dir]
    if spec.profile is not None:
        args += ["--profile", PROFILE_NAME]
    if spec.target:
        args += ["--target", spec.target]
    if spec.vars:
        args += ["--vars", json.dumps(dict(spec.vars), sort_keys=True)]
    return args


def selection_args(spec: RunSpec) -> list[str]:
    """The user's --select / --exclude / --selector / --indirect-selection flags."""
    args: list[str] = []
    if spec.select:
        args += ["--select", *spec.select]
    if spec.exclude:
        args += ["--exclude", *spec.exclude]
    if spec.selector:
        args += ["--selector", spec.selector]
    if spec.indirect_selection:
        args += ["--indirect-selection", spec.indirect_selection]
    return args


def state_args(spec: RunSpec, state: str | os.PathLike[str] | None = None) -> list[str]:
    """``--state`` (the spec's folder, or ``state`` in its place), ``--defer`` and ``--favor-state``."""
    state = state or spec.state
    if not state:
        return []
    args = ["--state", str(state)]
    if spec.defer:
        args.append("--defer")
    if spec.favor_state:
        args.append("--favor-state")
    return args


def parse_command(spec: RunSpec, workspace: Workspace) -> list[str]:
    """``dbt parse`` for the run's project and profile."""
    return ["parse", *common_args(spec, workspace), "--quiet"]


def freshness_command(spec: RunSpec, workspace: Workspace, sources: list[str]) -> list[str]:
    """``dbt source freshness`` of some sources (``source:NAME.TABLE`` selectors); it writes sources.json."""
    return ["source", "freshness", *common_args(spec, workspace), "--select", *sources]


def list_command(spec: RunSpec, workspace: Workspace) -> list[str]:
    """``dbt ls`` of the run's selection, one JSON document per node."""
    return [
        "ls", *common_args(spec, workspace), *selection_args(spec),
        "--output", "json", "--output-keys", "unique_id", "--log-level", "none",
    ]  # fmt: skip


def build_command(spec: RunSpec, workspace: Workspace, selectors: list[str] | None = None) -> list[str]:
    """The producer's single ``dbt build``: the run's selection, or exactly ``selectors`` (a resumed build)."""
    # Exactly the nodes listed: no test joins by indirect selection (the list has every test the run wants).
    exact = ["--select", *selectors, "--indirect-selection", "empty"] if selectors is not None else []
    selection = selection_args(spec) if selectors is None else exact
    args = ["build", *common_args(spec, workspace), *selection, *state_args(spec)]
    if spec.full_refresh:
        args.append("--full-refresh")
    if spec.empty:
        args.append("--empty")
    if spec.threads:
        args += ["--threads", str(spec.threads)]
    return args


def fallback_command(
    spec: RunSpec, workspace: Workspace, resource_type: str, selector: str, defer_state: Path | None = None
) -> list[str]:
    """The command that rebuilds one node alone, with the user's run-level flags only.

    ``defer_state`` is the folder a deferring run's rebuild defers to: the spec's state
    without the run's own nodes, so that refs to nodes this run built resolve to this run's
    relations, as they did in the build (where those nodes were selected).
    """
    command = FALLBACK_COMMANDS[resource_type]
    args = [command, *common_args(spec, workspace), "--select", selector]
    if defer_state is not None:
        args += state_args(spec, defer_state)
    if spec.full_refresh and command in _FULL_REFRESH_COMMANDS:
        args.append("--full-refresh")
    if spec.empty and command in _EMPTY_COMMANDS:
        args.append("--empty")
    args += ["--warn-error-options", _EMPTY_SELECTION_IS_ERROR]
    return args
