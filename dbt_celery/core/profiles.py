"""Built-in profile mappings: a warehouse described in a few fields, rendered to profiles.yml.

A mapping is plain data that can travel inside a :class:`~dbt_celery.core.spec.RunSpec`.
Secrets are never fields: a mapping names the environment variable that holds each
one (``password_env``), and the rendered ``profiles.yml`` refers to it with dbt's
``env_var()``, so the secret is read by dbt on the worker and never written to disk.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Mapping

import yaml

from dbt_celery.errors import ProfileError

#: The profile name dbt-celery gives a rendered mapping (passed to dbt as --profile).
PROFILE_NAME = "dbt_celery"
#: The target name of a rendered mapping when the spec names none.
DEFAULT_TARGET = "default"

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Field names that would carry a secret value; mappings take *_env names instead.
_SECRET_FIELDS = {"password", "secret", "token", "access_key_id", "secret_access_key", "private_key"}


def env_ref(name: str) -> str:
    """Return a dbt ``env_var()`` reference to an environment variable."""
    if not _ENV_NAME.match(name):
        raise ProfileError(f"{name!r} is not a valid environment variable name")
    return "{{ env_var('%s') }}" % name


@dataclasses.dataclass(frozen=True)
class DuckDBProfile:
    """A local DuckDB file: the embedded default warehouse."""

    type: ClassVar[str] = "duckdb"
    path: str
    schema: str = "main"
    threads: int = 4

    def output(self) -> dict[str, Any]:
        """Return the target's entry for profiles.yml."""
        # dbt-duckdb resolves a relative path against the process's working directory.
        return {"type": "duckdb", "path": os.path.abspath(self.path), "schema": self.schema, "threads": self.threads}


@dataclasses.dataclass(frozen=True)
class PostgresProfile:
    """A PostgreSQL database reached with a user and a password from the environment."""

    type: ClassVar[str] = "postgres"
    host: str
    user: str
    dbname: str
    schema: str
    port: int = 5432
    password_env: str | None = None
    sslmode: str | None = None
    threads: int = 4

    def output(self) -> dict[str, Any]:
        """Return the target's entry for profiles.yml."""
        out: dict[str, Any] = {
            "type": "postgres",
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": self.dbname,
            "schema": self.schema,
            "threads": self.threads,
            "password": env_ref(self.password_env) if self.password_env else "",
        }
        if self.sslmode:
            out["sslmode"] = self.sslmode
        return out


@dataclasses.dataclass(frozen=True)
class RedshiftProfile:
    """An Amazon Redshift cluster, with password (``method="database"``) or IAM auth."""

    type: ClassVar[str] = "redshift"
    host: str
    user: str
    dbname: str
    schema: str
    port: int = 5439
    method: str = "database"
    password_env: str | None = None
    cluster_id: str | None = None
    region: str | None = None
    iam_profile: str | None = None
    access_key_id_env: str | None = None
    secret_access_key_env: str | None = None
    db_groups: tuple[str, ...] = ()
    autocreate: bool = False
    sslmode: str | None = None
    ra3_node: bool | None = None
    threads: int = 4

    def __post_init__(self) -> None:
        if self.method == "database" and not self.password_env:
            raise ProfileError("redshift password auth needs password_env: the variable holding the password")
        if self.method == "iam" and not self.cluster_id:
            raise ProfileError("redshift IAM auth needs cluster_id")
        if self.method not in ("database", "iam"):
            raise ProfileError(f"redshift method must be 'database' or 'iam', not {self.method!r}")
        if bool(self.access_key_id_env) != bool(self.secret_access_key_env):
            raise ProfileError("give both access_key_id_env and secret_access_key_env, or neither")

    def output(self) -> dict[str, Any]:
        """Return the target's entry for profiles.yml."""
        out: dict[str, Any] = {
            "type": "redshift",
            "method": self.method,
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": self.dbname,
            "schema": self.schema,
            "threads": self.threads,
        }
        if self.method == "database":
            out["password"] = env_ref(self.password_env or "")
        else:
            out["cluster_id"] = self.cluster_id
            optional = {"region": self.region, "iam_profile": self.iam_profile, "autocreate": self.autocreate}
            out.update({k: v for k, v in optional.items() if v})
            if self.db_groups:
                out["db_groups"] = list(self.db_groups)
            if self.access_key_id_env:
                out["access_key_id"] = env_ref(self.access_key_id_env)
                out["secret_access_key"] = env_ref(self.secret_access_key_env or "")
        if self.sslmode:
            out["sslmode"] = self.sslmode
        if self.ra3_node is not None:
            out["ra3_node"] = self.ra3_node
        return out


ProfileMapping = DuckDBProfile | PostgresProfile | RedshiftProfile
_MAPPINGS: dict[str, type] = {cls.type: cls for cls in (DuckDBProfile, PostgresProfile, RedshiftProfile)}


def profile_from_dict(data: Mapping[str, Any]) -> ProfileMapping:
    """Build a mapping from its dict form (``{"type": "postgres", ...}``), validating it."""
    fields = dict(data)
    kind = fields.pop("type", None)
    cls = _MAPPINGS.get(str(kind))
    if cls is None:
        raise ProfileError(f"unknown profile type {kind!r}: expected one of {', '.join(sorted(_MAPPINGS))}")
    secrets = sorted(_SECRET_FIELDS & set(fields))
    if secrets:
        raise ProfileError(
            f"profile field(s) {', '.join(secrets)} would put a secret in the run spec; "
            f"name the environment variable instead ({secrets[0]}_env)"
        )
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise ProfileError(f"unknown field(s) for a {kind} profile: {', '.join(unknown)}")
    if "db_groups" in fields:
        fields["db_groups"] = tuple(fields["db_groups"])
    try:
        return cls(**fields)
    except TypeError as exc:
        raise ProfileError(f"incomplete {kind} profile: {exc}") from None


def render_profiles_yml(mapping: ProfileMapping, target: str | None = None) -> str:
    """Return the text of a profiles.yml holding one profile with one target."""
    name = target or DEFAULT_TARGET
    document = {PROFILE_NAME: {"target": name, "outputs": {name: mapping.output()}}}
    return yaml.safe_dump(document, sort_keys=False)


def write_profiles_dir(mapping: ProfileMapping, directory: Path, target: str | None = None) -> Path:
    """Write ``profiles.yml`` for a mapping into ``directory`` and return the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "profiles.yml"
    path.write_text(render_profiles_yml(mapping, target))
    path.chmod(0o600)
    return directory
