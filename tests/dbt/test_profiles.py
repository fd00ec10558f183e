"""Built-in profile mappings: what they render, that dbt accepts them, and that no secret leaks.

A mapping travels inside the run spec (visible in Flower), so a secret must only ever
be named (``*_env``) and rendered as dbt's ``env_var()``: the value is read by dbt on
the worker and written nowhere.
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
import yaml

from dbt_celery.core.profiles import PROFILE_NAME, profile_from_dict, render_profiles_yml
from dbt_celery.core.spec import RunSpec
from dbt_celery.dbt.commands import Workspace, parse_command
from dbt_celery.dbt.invocation import DbtInvocation
from tests.dbt.dbt_fixtures import POSTGRES, copy_fixture_project, isolated_workspaces  # noqa: F401 - autouse

SECRET = "s3cr3t-value"
PASSWORD_ENV = "DBT_CELERY_TEST_PASSWORD"
KEY_ID_ENV = "DBT_CELERY_TEST_AWS_KEY_ID"
SECRET_KEY_ENV = "DBT_CELERY_TEST_AWS_SECRET"
ENV_REF = re.compile(r"^\{\{ env_var\('([A-Za-z_][A-Za-z0-9_]*)'\) \}\}$")
SECRET_KEYS = {"password", "access_key_id", "secret_access_key"}

POSTGRES_MAPPING = {"type": "postgres", **POSTGRES, "schema": "dbt_celery_profiles", "password_env": PASSWORD_ENV}
REDSHIFT_PASSWORD_MAPPING = {
    "type": "redshift", "host": "example.abc123.eu-west-1.redshift.amazonaws.com", "user": "loader",
    "dbname": "analytics", "schema": "staging", "password_env": PASSWORD_ENV,
}  # fmt: skip
REDSHIFT_IAM_MAPPING = {
    "type": "redshift", "method": "iam", "host": "example.abc123.eu-west-1.redshift.amazonaws.com",
    "user": "loader", "dbname": "analytics", "schema": "staging", "cluster_id": "example",
    "region": "eu-west-1", "db_groups": ["loaders", "readers"],
    "access_key_id_env": KEY_ID_ENV, "secret_access_key_env": SECRET_KEY_ENV,
}  # fmt: skip


def rendered_output(mapping: dict, target: str | None = None) -> dict:
    """The one target entry of the profiles.yml rendered for ``mapping``."""
    document = yaml.safe_load(render_profiles_yml(profile_from_dict(mapping), target))
    assert list(document) == [PROFILE_NAME]
    profile = document[PROFILE_NAME]
    assert list(profile["outputs"]) == [profile["target"]]
    return profile["outputs"][profile["target"]]


def dbt_log(workspace: Workspace) -> str:
    """The workspace's dbt.log without colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", (workspace.log_path / "dbt.log").read_text())


def files_containing(root: Path, text: str) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and text.encode() in path.read_bytes()]


@pytest.fixture(scope="module")
def edge_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_fixture_project("edge_cases", tmp_path_factory.mktemp("profiles"))


# -- rendering -------------------------------------------------------------------------------
def test_duckdb_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    output = rendered_output({"type": "duckdb", "path": "warehouse.duckdb"})
    # A relative path is made absolute: dbt-duckdb would resolve it against the worker's cwd.
    assert output == {"type": "duckdb", "path": str(tmp_path / "warehouse.duckdb"), "schema": "main", "threads": 4}


def test_postgres_mapping() -> None:
    output = rendered_output(POSTGRES_MAPPING, target="prod")
    assert output == {
        "type": "postgres", "host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test",
        "schema": "dbt_celery_profiles", "threads": 4, "password": "{{ env_var('%s') }}" % PASSWORD_ENV,
    }  # fmt: skip
    assert (
        yaml.safe_load(render_profiles_yml(profile_from_dict(POSTGRES_MAPPING), "prod"))[PROFILE_NAME]["target"]
        == "prod"
    )
    # Without a password variable (trust auth, .pgpass), the password is empty, not absent.
    no_password = {k: v for k, v in POSTGRES_MAPPING.items() if k != "password_env"}
    assert rendered_output({**no_password, "sslmode": "require"})["password"] == ""
    assert rendered_output({**no_password, "sslmode": "require"})["sslmode"] == "require"


def test_redshift_password_mapping() -> None:
    output = rendered_output(REDSHIFT_PASSWORD_MAPPING)
    assert output["method"] == "database"
    assert output["port"] == 5439
    assert output["password"] == "{{ env_var('%s') }}" % PASSWORD_ENV
    assert not {"cluster_id", "access_key_id", "secret_access_key"} & set(output)


def test_redshift_iam_mapping_with_access_keys() -> None:
    output = rendered_output(REDSHIFT_IAM_MAPPING)
    assert output["method"] == "iam"
    assert (output["cluster_id"], output["region"], output["db_groups"]) == (
        "example",
        "eu-west-1",
        ["loaders", "readers"],
    )
    assert output["access_key_id"] == "{{ env_var('%s') }}" % KEY_ID_ENV
    assert output["secret_access_key"] == "{{ env_var('%s') }}" % SECRET_KEY_ENV
    assert "password" not in output


@pytest.mark.parametrize(
    "mapping",
    [POSTGRES_MAPPING, REDSHIFT_PASSWORD_MAPPING, REDSHIFT_IAM_MAPPING],
    ids=["postgres", "redshift", "redshift-iam"],
)
def test_secrets_are_only_env_var_references(mapping: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (PASSWORD_ENV, KEY_ID_ENV, SECRET_KEY_ENV):
        monkeypatch.setenv(name, SECRET)
    text = render_profiles_yml(profile_from_dict(mapping))
    assert SECRET not in text
    output = rendered_output(mapping)
    secrets = {key: value for key, value in output.items() if key in SECRET_KEYS}
    assert secrets, "the mapping should render at least one secret"
    for key, value in secrets.items():
        match = ENV_REF.match(value)
        assert match, f"{key} is rendered as {value!r}, not as an env_var() reference"
        assert match.group(1) == mapping[f"{key}_env"]


@pytest.mark.parametrize(
    "mapping, message",
    [
        ({**REDSHIFT_PASSWORD_MAPPING, "password_env": None}, "needs password_env"),
        ({**REDSHIFT_IAM_MAPPING, "cluster_id": None}, "needs cluster_id"),
        (
            {**REDSHIFT_IAM_MAPPING, "secret_access_key_env": None},
            "give both access_key_id_env and secret_access_key_env",
        ),
        ({**POSTGRES_MAPPING, "password_env": "not a name"}, "'not a name' is not a valid environment variable name"),
    ],
    ids=["redshift-no-password", "iam-no-cluster", "iam-half-keys", "bad-env-name"],
)
def test_incomplete_mappings_say_what_is_missing(mapping: dict, message: str) -> None:
    from dbt_celery.errors import ProfileError

    with pytest.raises(ProfileError, match=re.escape(message)):
        render_profiles_yml(profile_from_dict(mapping))


# -- dbt accepts what is rendered ------------------------------------------------------------
def debug_command(spec: RunSpec, workspace: Workspace) -> list[str]:
    """``dbt debug`` against the workspace's rendered profile (debug takes no --target-path)."""
    args = ["debug", "--project-dir", spec.project_dir, "--log-path", str(workspace.log_path)]
    args += ["--profiles-dir", str(workspace.profiles_dir(spec)), "--profile", PROFILE_NAME]
    if spec.target:
        args += ["--target", spec.target]
    return args


def test_dbt_debug_succeeds_with_the_duckdb_mapping(edge_project: Path, tmp_path: Path) -> None:
    spec = RunSpec(project_dir=str(edge_project), profile={"type": "duckdb", "path": str(tmp_path / "debug.duckdb")})
    workspace = Workspace.create(spec, "debug", "duckdb")
    invocation = DbtInvocation(debug_command(spec, workspace), cwd=spec.project_dir)
    invocation.run()
    assert (invocation.success, invocation.error) == (True, None)
    log = dbt_log(workspace)
    assert "Connection test: [OK connection ok]" in log
    assert "All checks passed!" in log
    assert "adapter type: duckdb" in log
    assert (tmp_path / "debug.duckdb").exists()


@pytest.fixture(scope="module")
def postgres_debug(edge_project: Path):
    """``dbt debug`` through the PostgreSQL mapping, with a fake secret in the password variable.

    Trust auth accepts any password, so the run succeeds only if dbt resolved the reference.
    """
    spec = RunSpec(project_dir=str(edge_project), profile=POSTGRES_MAPPING, target="ci")
    workspace = Workspace.create(spec, "debug", "postgres")
    invocation = DbtInvocation(debug_command(spec, workspace), cwd=spec.project_dir, env={PASSWORD_ENV: SECRET})
    invocation.run()
    return spec, workspace, invocation


def test_dbt_debug_succeeds_with_the_postgres_mapping(postgres_debug) -> None:
    spec, workspace, invocation = postgres_debug
    assert (invocation.success, invocation.error) == (True, None)
    log = dbt_log(workspace)
    assert "Connection test: [OK connection ok]" in log
    assert "All checks passed!" in log
    # The connection is the mapping's (the project's own profile targets DuckDB).
    assert "adapter type: postgres" in log and "schema: dbt_celery_profiles" in log


def test_postgres_secret_is_written_nowhere(postgres_debug) -> None:
    spec, workspace, invocation = postgres_debug
    # The spec as sent in task messages names the variable, never its value.
    message = spec.to_json()
    assert SECRET not in message
    assert json.loads(message)["profile"]["password_env"] == PASSWORD_ENV
    assert RunSpec.from_json(message) == spec
    # Neither the rendered profile nor anything dbt wrote (logs at debug level) holds it.
    profiles_yml = workspace.root / "profile" / "profiles.yml"
    assert profiles_yml.is_file()
    rendered = yaml.safe_load(profiles_yml.read_text())
    assert rendered[PROFILE_NAME]["outputs"]["ci"]["password"] == "{{ env_var('%s') }}" % PASSWORD_ENV
    assert stat.S_IMODE(profiles_yml.stat().st_mode) == 0o600
    assert (workspace.log_path / "dbt.log").is_file()
    assert files_containing(workspace.root, SECRET) == []
    assert files_containing(Path(spec.project_dir), SECRET) == []


def test_dbt_parse_accepts_the_redshift_mapping(edge_project: Path) -> None:
    # No cluster is needed to parse; a fake password proves only that the reference resolves.
    spec = RunSpec(project_dir=str(edge_project), profile=REDSHIFT_PASSWORD_MAPPING)
    workspace = Workspace.create(spec, "parse", "redshift")
    invocation = DbtInvocation(parse_command(spec, workspace), cwd=spec.project_dir, env={PASSWORD_ENV: SECRET})
    invocation.run()
    assert (invocation.success, invocation.error) == (True, None)
    manifest = json.loads((workspace.target_path / "manifest.json").read_text())
    assert manifest["metadata"]["adapter_type"] == "redshift"
    assert "model.edge_cases.boom" in manifest["nodes"]
    assert files_containing(workspace.root, SECRET) == []
