"""Which warehouse objects a run writes to: its resolved target, for the overlap guard.

Two runs conflict when they write to the same place, however their profiles are given:
a built-in mapping and a ``profiles.yml`` naming the same schema are the same target,
while two mappings that differ only in ``threads`` are one target too. The identity is
the adapter type and where it writes (host, port, database, schema; a DuckDB file's path).
``profiles.yml`` values are rendered for ``env_var()`` the way dbt would on this worker.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from dbt_celery.core.profiles import DEFAULT_TARGET, profile_from_dict
from dbt_celery.core.spec import RunSpec
from dbt_celery.errors import ProfileError

# Fields that say where an adapter writes; everything else (threads, timeouts) does not matter.
_PLACE_FIELDS = ("host", "port", "dbname", "database", "schema", "path")
_ENV_VAR = re.compile(r"\{\{\s*env_var\(\s*['\"]([^'\"]+)['\"]\s*(?:,\s*['\"]([^'\"]*)['\"]\s*)?\)\s*\}\}")


def target_identity(spec: RunSpec) -> dict[str, Any]:
    """The adapter type and the place a run's target writes to."""
    output = _output(spec)
    place = {field: _render(output.get(field)) for field in _PLACE_FIELDS if output.get(field) is not None}
    if "dbname" in place:
        place["database"] = place.pop("dbname")
    if "path" in place:
        place["path"] = os.path.abspath(os.path.join(spec.project_dir, str(place["path"])))
    return {"type": str(output.get("type", "")), **{key: str(value) for key, value in sorted(place.items())}}


def _output(spec: RunSpec) -> Mapping[str, Any]:
    if spec.profile is not None:
        return profile_from_dict(spec.profile).output()
    profiles_dir = Path(spec.profiles_dir or os.environ.get("DBT_PROFILES_DIR") or Path.home() / ".dbt")
    try:
        profiles = yaml.safe_load((profiles_dir / "profiles.yml").read_text()) or {}
        project = yaml.safe_load((Path(spec.project_dir) / "dbt_project.yml").read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(f"cannot read the profile of {spec.project_dir}: {exc}") from None
    profile = profiles.get(project.get("profile")) or {}
    target = spec.target or _render(profile.get("target")) or DEFAULT_TARGET
    return (profile.get("outputs") or {}).get(target) or {}


def _render(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    return _ENV_VAR.sub(lambda match: os.environ.get(match.group(1), match.group(2) or ""), value)
