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


#: The auth methods the Redshift mapping renders (dbt-redshift's names).
REDSHIFT_METHODS = ("database", "iam", "iam_role")
# dbt-redshift's identity-center methods need a browser or a token endpoint holding a secret.
_IDENTITY_CENTER_METHODS = ("browser_identity_center", "oauth_token_identity_center")
# An AWS endpoint the driver reads the region from: <cluster>.<id>.<region>.redshift.amazonaws.com,
# <workgroup>.<account>.<region>.redshift-serverless.amazonaws.com (and the -dev / .cn forms).
_AWS_ENDPOINT = re.compile(r"^(.+\..+\..+\.redshift|.+\..+\.redshift-serverless)(-dev)?\.amazonaws\.com(\..*)?$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RedshiftProfile:
    """An Amazon Redshift cluster or Serverless workgroup, with one of dbt-redshift's auth methods.

    * ``method="database"``: ``user`` and the password in the variable ``password_env``;
    * ``method="iam"`` (IAM user): temporary credentials for ``user``, fetched with the
      AWS identity of ``iam_profile``, of the key pair in ``access_key_id_env`` /
      ``secret_access_key_env``, or of the worker's default AWS credential chain;
    * ``method="iam_role"``: the AWS identity itself signs in (no ``user``), taken from
      ``iam_profile`` or the worker's default AWS credential chain.

    Redshift Serverless is a host containing ``serverless`` (as dbt-redshift detects it)
    or ``is_serverless=True``; with IAM it takes ``serverless_work_group`` (read from a
    workgroup endpoint host when omitted), a provisioned cluster takes ``cluster_id``.
    The rules mirror what dbt-redshift 1.11 checks only when it connects; a field the
    chosen method would ignore is refused too, so that no setting silently has no effect.
    """

    type: ClassVar[str] = "redshift"
    host: str
    dbname: str
    schema: str
    user: str | None = None
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
    is_serverless: bool | None = None
    serverless_work_group: str | None = None
    serverless_acct_id: str | None = None
    sslmode: str | None = None
    ra3_node: bool | None = None
    threads: int = 4

    def __post_init__(self) -> None:
        _check_redshift(self)

    @property
    def serverless(self) -> bool:
        """Whether dbt-redshift treats the target as Redshift Serverless."""
        return self.is_serverless is True or "serverless" in self.host

    def output(self) -> dict[str, Any]:
        """Return the target's entry for profiles.yml."""
        out: dict[str, Any] = {"type": "redshift", "method": self.method, "host": self.host, "port": self.port}
        if self.user:
            out["user"] = self.user
        out.update({"dbname": self.dbname, "schema": self.schema, "threads": self.threads})
        if self.password_env:
            out["password"] = env_ref(self.password_env)
        optional = {
            "cluster_id": self.cluster_id,
            "region": self.region,
            "iam_profile": self.iam_profile,
            "autocreate": self.autocreate or None,
            "db_groups": list(self.db_groups) or None,
            "is_serverless": self.is_serverless,
            "serverless_work_group": self.serverless_work_group,
            "serverless_acct_id": self.serverless_acct_id,
            "sslmode": self.sslmode,
            "ra3_node": self.ra3_node,
        }
        out.update({key: value for key, value in optional.items() if value is not None})
        if self.access_key_id_env and self.secret_access_key_env:
            out["access_key_id"] = env_ref(self.access_key_id_env)
            out["secret_access_key"] = env_ref(self.secret_access_key_env)
        return out


def _check_redshift(profile: RedshiftProfile) -> None:
    """Refuse a Redshift mapping dbt-redshift could not connect with, saying what to change."""
    method = profile.method
    if method in _IDENTITY_CENTER_METHODS:
        raise ProfileError(
            f"redshift method {method!r} (IAM Identity Center) is not a built-in mapping: "
            "give a profiles.yml with profiles_dir"
        )
    if method not in REDSHIFT_METHODS:
        raise ProfileError(f"redshift method must be one of {', '.join(map(repr, REDSHIFT_METHODS))}, not {method!r}")
    if bool(profile.access_key_id_env) != bool(profile.secret_access_key_env):
        raise ProfileError("give both access_key_id_env and secret_access_key_env, or neither")
    if method == "database":
        _check_password_auth(profile)
    else:
        _check_iam_auth(profile)


def _set(profile: RedshiftProfile, *names: str) -> list[str]:
    """The fields among ``names`` that the mapping sets."""
    return [name for name in names if getattr(profile, name) not in (None, False, ())]


def _check_password_auth(profile: RedshiftProfile) -> None:
    if not profile.user:
        raise ProfileError("redshift password auth (method 'database') needs user")
    if not profile.password_env:
        raise ProfileError("redshift password auth needs password_env: the variable holding the password")
    iam_only = _set(
        profile, "cluster_id", "iam_profile", "access_key_id_env", "db_groups", "autocreate",
        "serverless_work_group", "serverless_acct_id",
    )  # fmt: skip
    if iam_only:
        raise ProfileError(
            f"{', '.join(iam_only)} only apply to IAM auth: drop them, or set method to 'iam' or 'iam_role'"
        )


def _check_iam_auth(profile: RedshiftProfile) -> None:
    method = profile.method
    if profile.password_env:
        raise ProfileError(
            f"redshift IAM auth (method {method!r}) takes no password: drop password_env "
            "(the driver fetches a temporary one)"
        )
    if profile.serverless:
        if profile.cluster_id:
            raise ProfileError(
                "cluster_id names a provisioned cluster, but this target is Redshift Serverless "
                "(is_serverless, or 'serverless' in host): drop cluster_id (serverless_work_group, or a workgroup "
                "endpoint as host, names the workgroup)"
            )
    else:
        if not profile.cluster_id:
            raise ProfileError(
                f"redshift IAM auth (method {method!r}) on a provisioned cluster needs cluster_id "
                "(dbt-redshift does not read it from host); for Redshift Serverless set is_serverless: true"
            )
        serverless_only = _set(profile, "serverless_work_group", "serverless_acct_id")
        if serverless_only:
            raise ProfileError(
                f"{', '.join(serverless_only)} only apply to Redshift Serverless: set is_serverless: true "
                "(or drop them)"
            )
    if not profile.region and not _AWS_ENDPOINT.match(profile.host):
        raise ProfileError(
            f"redshift IAM auth needs region: the host {profile.host!r} is not an AWS endpoint "
            "(<name>.<id>.<region>.redshift[-serverless].amazonaws.com) the driver could read it from"
        )
    if method == "iam":
        _check_iam_user(profile)
    else:
        _check_iam_role(profile)


def _check_iam_user(profile: RedshiftProfile) -> None:
    if not profile.user:
        raise ProfileError("redshift IAM user auth (method 'iam') needs user: the database user to sign in as")
    if profile.iam_profile and profile.access_key_id_env:
        raise ProfileError("give iam_profile or access_key_id_env/secret_access_key_env, not both")
    if profile.serverless:
        ignored = _set(profile, "db_groups", "autocreate")
        if ignored:
            raise ProfileError(
                f"{', '.join(ignored)} only apply to a provisioned cluster (Redshift Serverless ignores them): "
                "drop them"
            )


def _check_iam_role(profile: RedshiftProfile) -> None:
    ignored = _set(profile, "user", "access_key_id_env", "db_groups", "autocreate")
    if ignored:
        raise ProfileError(
            f"method 'iam_role' signs in as the AWS identity itself, so {', '.join(ignored)} would be ignored: "
            "drop them (AWS credentials come from iam_profile or the worker's environment), or use method 'iam'"
        )


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
