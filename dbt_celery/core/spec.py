"""RunSpec: what to build and how, in one JSON-serialisable object.

A spec travels inside Celery messages and is visible in Flower, so it never holds a
secret: a built-in profile names the *environment variable* holding a password, and
the worker resolves it from its own environment.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from dbt_celery.core.profiles import profile_from_dict
from dbt_celery.errors import ConfigurationError, ProjectNotFound

INVOCATION_MODES = ("in_process", "subprocess")
#: dbt's --indirect-selection modes (how tests of selected nodes join the selection).
INDIRECT_SELECTION_MODES = ("eager", "cautious", "buildable", "empty")

#: Seconds a consumer may wait for its node before it ends as timed out.
DEFAULT_TIMEOUT = 6 * 3600.0
#: Seconds without a producer heartbeat after which the producer counts as dead.
DEFAULT_HEARTBEAT_TIMEOUT = 60.0
#: Longest countdown, in seconds, between two polls of a waiting consumer.
DEFAULT_POLL_MAX = 1.0
#: Countdown, in seconds, of a consumer whose node dbt has not reached yet. Only a safety net:
#: the producer wakes the consumer as soon as the node's record lands.
DEFAULT_IDLE_WAIT = 30.0
#: Seconds without a sign of life after which a consumer's message counts as lost and is sent again.
DEFAULT_REARM_AFTER = 120.0


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One dbt-celery run: the project, the selection and the run's knobs.

    ``profiles_dir`` points at a directory with the user's ``profiles.yml``;
    ``profile`` is a built-in mapping (see :mod:`dbt_celery.core.profiles`) used instead.
    ``exclusive`` makes a run wait while an earlier run on the same target is still
    building (see :mod:`dbt_celery.core.overlap`). ``retries`` counts real retries per
    node (each one builds the node inline once the producer is done); polls while
    waiting never count against it. ``heartbeat_timeout`` is the lease of whoever
    builds; ``rearm_after`` the silence after which a consumer's message counts as lost;
    ``idle_wait`` the countdown of a consumer whose node dbt has not reached (the producer
    wakes it sooner: this is only the safety net). ``empty`` is dbt's ``--empty``: refs and
    sources read as zero rows (seeds still load).

    Slim runs: ``state`` is a folder with an earlier run's ``manifest.json`` (and
    ``run_results.json``) that ``state:modified+`` and ``result:error+`` select against;
    ``defer`` and ``favor_state`` are dbt's ``--defer`` and ``--favor-state``. The folder must
    be readable by the workers, like the project. ``indirect_selection`` is dbt's
    ``--indirect-selection``. ``source_freshness`` runs ``dbt source freshness`` on the
    sources the selection reads before building: nodes downstream of a source past its
    ``error_after`` (or whose freshness could not be checked) end ``skipped``, the source
    named, and are left out of the build.
    """

    project_dir: str
    profiles_dir: str | None = None
    profile: Mapping[str, Any] | None = None
    target: str | None = None
    threads: int | None = None
    select: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    selector: str | None = None
    vars: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    full_refresh: bool = False
    empty: bool = False
    state: str | None = None
    defer: bool = False
    favor_state: bool = False
    indirect_selection: str | None = None
    source_freshness: bool = False
    invocation: str = "in_process"
    retries: int = 1
    retry_delay: float = 1.0
    timeout: float = DEFAULT_TIMEOUT
    heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT
    poll_max: float = DEFAULT_POLL_MAX
    idle_wait: float = DEFAULT_IDLE_WAIT
    rearm_after: float = DEFAULT_REARM_AFTER
    exclusive: bool = True

    @property
    def idle_countdown(self) -> float:
        """A waiting consumer's countdown: ``idle_wait``, short enough that the watchdog never takes it for lost."""
        return min(self.idle_wait, self.rearm_after / 3)

    def __post_init__(self) -> None:
        object.__setattr__(self, "select", _as_tuple(self.select, "select"))
        object.__setattr__(self, "exclude", _as_tuple(self.exclude, "exclude"))
        object.__setattr__(self, "vars", parse_vars(self.vars))
        if self.invocation not in INVOCATION_MODES:
            raise ConfigurationError(
                f"invocation must be one of {', '.join(INVOCATION_MODES)}, not {self.invocation!r}"
            )
        if self.indirect_selection is not None and self.indirect_selection not in INDIRECT_SELECTION_MODES:
            raise ConfigurationError(
                f"indirect_selection must be one of {', '.join(INDIRECT_SELECTION_MODES)}, "
                f"not {self.indirect_selection!r}"
            )
        if (self.defer or self.favor_state) and not self.state:
            raise ConfigurationError("defer and favor_state need state: the folder of the run to defer to")
        if self.favor_state and not self.defer:
            raise ConfigurationError("favor_state only applies with defer")
        if self.profile is not None and self.profiles_dir is not None:
            raise ConfigurationError("give either profiles_dir or a built-in profile, not both")
        if self.profile is not None:
            profile_from_dict(self.profile)  # validates, raises ProfileError
        for name, lowest in (("retries", 0), ("threads", 1)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < lowest):
                raise ConfigurationError(f"{name} must be an integer of at least {lowest}, not {value!r}")
        for name in ("timeout", "heartbeat_timeout", "poll_max", "idle_wait", "rearm_after", "retry_delay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigurationError(f"{name} must be a finite number of seconds, not {value!r}")
            if value < 0 or (value == 0 and name != "retry_delay"):
                raise ConfigurationError(f"{name} must be a positive number of seconds, not {value!r}")

    # -- JSON -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form sent in task messages."""
        data = dataclasses.asdict(self)
        data["select"] = list(self.select)
        data["exclude"] = list(self.exclude)
        data["vars"] = dict(self.vars)
        data["profile"] = dict(self.profile) if self.profile is not None else None
        return data

    def to_json(self) -> str:
        """Return the spec as a JSON string."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        """Build a spec from :meth:`to_dict` output; unknown keys are an error."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ConfigurationError(f"unknown run spec field(s): {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        """Build a spec from :meth:`to_json` output."""
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"run spec is not valid JSON: {exc}") from None

    # -- checks that need the filesystem ----------------------------------------------
    def check_project(self) -> Path:
        """Return the project directory, or raise :class:`ProjectNotFound` saying why (a missing state folder too)."""
        path = Path(self.project_dir)
        if not path.is_dir():
            raise ProjectNotFound(f"dbt project directory not found: {path}")
        if not (path / "dbt_project.yml").is_file():
            raise ProjectNotFound(f"{path} is not a dbt project: it has no dbt_project.yml")
        if self.state and not (Path(self.state) / "manifest.json").is_file():
            raise ConfigurationError(
                f"state folder {self.state} has no manifest.json (dbt-celery artifacts RUN_ID --out DIR writes one)"
            )
        return path

    def resolved(self) -> RunSpec:
        """Return a copy whose paths are absolute, for sending to another process."""
        profiles_dir = os.path.abspath(self.profiles_dir) if self.profiles_dir else None
        state = os.path.abspath(self.state) if self.state else None
        return dataclasses.replace(
            self, project_dir=os.path.abspath(self.project_dir), profiles_dir=profiles_dir, state=state
        )


def parse_vars(value: Any) -> dict[str, Any]:
    """Return dbt vars as a dict from a dict or a JSON/YAML string, like ``dbt --vars``."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            try:
                # YAML turns 2026-01-01 into a date; dbt hands vars to Jinja as text anyway.
                value = json.loads(json.dumps(yaml.safe_load(value), default=str))
            except yaml.YAMLError as exc:
                raise ConfigurationError(f"--vars is not valid JSON or YAML: {exc}") from None
    if not isinstance(value, Mapping):
        raise ConfigurationError(f'--vars must be a JSON object such as \'{{"day": "2026-01-01"}}\', got {value!r}')
    try:
        json.dumps(dict(value))
    except TypeError as exc:
        raise ConfigurationError(f"--vars must be JSON-serialisable: {exc}") from None
    return dict(value)


def _as_tuple(value: str | Sequence[str] | None, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    if not all(isinstance(item, str) for item in value):
        raise ConfigurationError(f"{name} must be a list of strings")
    return tuple(value)
