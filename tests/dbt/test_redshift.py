"""The built-in Redshift mapping: every auth form dbt-redshift 1.11 offers, and a real build.

No Redshift and no AWS can be reached here, so the tests go as far as each can:

* every form is rendered, and real ``dbt parse`` and ``dbt ls`` accept it (neither connects);
* dbt-redshift's own connection code turns each rendered form into the driver's
  arguments; only ``redshift_connector.connect`` itself, which would call AWS or
  Redshift, is replaced by a recorder;
* password auth runs for real: ``dbt build`` with dbt-redshift and its driver against
  the local PostgreSQL, through the loopback proxy of ``tests/redshift_proxy.py``.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import psycopg2
import pytest
import redshift_connector
import yaml

from dbt_celery.core.profiles import PROFILE_NAME, profile_from_dict, render_profiles_yml, write_profiles_dir
from dbt_celery.core.spec import RunSpec
from dbt_celery.dbt.commands import Workspace, list_command, parse_command
from dbt_celery.dbt.invocation import DbtInvocation
from dbt_celery.errors import ConfigurationError
from tests.dbt.dbt_fixtures import (  # noqa: F401 - isolated_workspaces is autouse
    copy_fixture_project,
    drop_schemas,
    isolated_workspaces,
    postgres_connection,
    unique_schema,
)
from tests.fake_aws import FakeAWS
from tests.redshift_proxy import (
    REDSHIFT_SMALL_KINDS,
    REDSHIFT_SMALL_ROWS,
    RedshiftProxy,
    ServerHandshake,
    proxy_profile,
    schema_contents,
    throwaway_tls,
)

PASSWORD_ENV = "DBT_CELERY_TEST_REDSHIFT_PASSWORD"
KEY_ID_ENV = "DBT_CELERY_TEST_AWS_KEY_ID"
SECRET_KEY_ENV = "DBT_CELERY_TEST_AWS_SECRET"
#: Values that must only ever be read from the environment, on the worker.
SECRETS = {PASSWORD_ENV: "pw-7f3a91c2", KEY_ID_ENV: "AKIA7F3A91C2EXAMPLE", SECRET_KEY_ENV: "sk-7f3a91c2"}
ENV_REF = re.compile(r"^\{\{ env_var\('([A-Za-z_][A-Za-z0-9_]*)'\) \}\}$")
DBT = str(Path(sys.executable).with_name("dbt"))

PROVISIONED_HOST = "example.abc123.eu-west-1.redshift.amazonaws.com"
WORKGROUP_HOST = "analytics.123456789012.eu-west-1.redshift-serverless.amazonaws.com"
CUSTOM_HOST = "warehouse.corp.example.com"
BASE = {"type": "redshift", "dbname": "analytics", "schema": "staging"}

#: One mapping per auth form, as a user would put it into RunSpec(profile=...).
FORMS: dict[str, dict[str, Any]] = {
    "password": {**BASE, "host": PROVISIONED_HOST, "user": "loader", "password_env": PASSWORD_ENV},
    "serverless-password": {**BASE, "host": WORKGROUP_HOST, "user": "loader", "password_env": PASSWORD_ENV},
    "iam-user-keys": {
        **BASE, "method": "iam", "host": PROVISIONED_HOST, "user": "loader", "cluster_id": "example",
        "db_groups": ["loaders"], "autocreate": True,
        "access_key_id_env": KEY_ID_ENV, "secret_access_key_env": SECRET_KEY_ENV,
    },
    "iam-user-profile": {
        **BASE, "method": "iam", "host": CUSTOM_HOST, "region": "eu-west-1", "user": "loader",
        "cluster_id": "example", "iam_profile": "etl",
    },
    "iam-role": {
        **BASE, "method": "iam_role", "host": PROVISIONED_HOST, "cluster_id": "example", "iam_profile": "etl",
        "ra3_node": True, "port": 5440,
    },
    "serverless-iam-role": {**BASE, "method": "iam_role", "host": WORKGROUP_HOST},
    "serverless-iam-user": {
        **BASE, "method": "iam", "host": CUSTOM_HOST, "is_serverless": True, "serverless_work_group": "analytics",
        "serverless_acct_id": "123456789012", "region": "eu-west-1", "user": "loader",
        "access_key_id_env": KEY_ID_ENV, "secret_access_key_env": SECRET_KEY_ENV,
    },
}  # fmt: skip

#: The profiles.yml entry each form renders (secrets as env_var() references only).
RENDERED: dict[str, dict[str, Any]] = {
    "password": {
        "type": "redshift", "method": "database", "host": PROVISIONED_HOST, "port": 5439, "user": "loader",
        "dbname": "analytics", "schema": "staging", "threads": 4, "password": "{{ env_var('%s') }}" % PASSWORD_ENV,
    },
    "serverless-password": {
        "type": "redshift", "method": "database", "host": WORKGROUP_HOST, "port": 5439, "user": "loader",
        "dbname": "analytics", "schema": "staging", "threads": 4, "password": "{{ env_var('%s') }}" % PASSWORD_ENV,
    },
    "iam-user-keys": {
        "type": "redshift", "method": "iam", "host": PROVISIONED_HOST, "port": 5439, "user": "loader",
        "dbname": "analytics", "schema": "staging", "threads": 4, "cluster_id": "example", "autocreate": True,
        "db_groups": ["loaders"], "access_key_id": "{{ env_var('%s') }}" % KEY_ID_ENV,
        "secret_access_key": "{{ env_var('%s') }}" % SECRET_KEY_ENV,
    },
    "iam-user-profile": {
        "type": "redshift", "method": "iam", "host": CUSTOM_HOST, "port": 5439, "user": "loader",
        "dbname": "analytics", "schema": "staging", "threads": 4, "cluster_id": "example", "region": "eu-west-1",
        "iam_profile": "etl",
    },
    "iam-role": {
        "type": "redshift", "method": "iam_role", "host": PROVISIONED_HOST, "port": 5440, "dbname": "analytics",
        "schema": "staging", "threads": 4, "cluster_id": "example", "iam_profile": "etl", "ra3_node": True,
    },
    "serverless-iam-role": {
        "type": "redshift", "method": "iam_role", "host": WORKGROUP_HOST, "port": 5439, "dbname": "analytics",
        "schema": "staging", "threads": 4,
    },
    "serverless-iam-user": {
        "type": "redshift", "method": "iam", "host": CUSTOM_HOST, "port": 5439, "user": "loader",
        "dbname": "analytics", "schema": "staging", "threads": 4, "region": "eu-west-1", "is_serverless": True,
        "serverless_work_group": "analytics", "serverless_acct_id": "123456789012",
        "access_key_id": "{{ env_var('%s') }}" % KEY_ID_ENV, "secret_access_key": "{{ env_var('%s') }}" % SECRET_KEY_ENV,
    },
}  # fmt: skip

#: What dbt-redshift hands redshift_connector.connect for each form (a subset of its arguments).
DRIVER_ARGUMENTS: dict[str, dict[str, Any]] = {
    "password": {
        "iam": None, "user": "loader", "password": SECRETS[PASSWORD_ENV], "is_serverless": False,
        "ssl": True, "sslmode": "verify-ca",  # sslmode 'prefer' (the default) means verify-ca to the driver
    },
    "serverless-password": {"iam": None, "user": "loader", "password": SECRETS[PASSWORD_ENV], "is_serverless": True},
    "iam-user-keys": {
        "iam": True, "db_user": "loader", "password": "", "cluster_identifier": "example", "is_serverless": False,
        "db_groups": ["loaders"], "auto_create": True, "ssl": True, "sslmode": "verify-ca",
        "access_key_id": SECRETS[KEY_ID_ENV], "secret_access_key": SECRETS[SECRET_KEY_ENV],
    },
    "iam-user-profile": {
        "iam": True, "db_user": "loader", "cluster_identifier": "example", "region": "eu-west-1", "profile": "etl",
        "is_serverless": False,
    },
    "iam-role": {
        "iam": True, "db_user": None, "cluster_identifier": "example", "profile": "etl", "group_federation": True,
        "is_serverless": False,
    },
    "serverless-iam-role": {
        "iam": True, "db_user": None, "cluster_identifier": None, "is_serverless": True, "group_federation": False,
    },
    "serverless-iam-user": {
        "iam": True, "db_user": "loader", "cluster_identifier": None, "is_serverless": True,
        "serverless_work_group": "analytics", "serverless_acct_id": "123456789012", "region": "eu-west-1",
        "access_key_id": SECRETS[KEY_ID_ENV], "secret_access_key": SECRETS[SECRET_KEY_ENV],
    },
}  # fmt: skip


def rendered_output(mapping: dict[str, Any]) -> dict[str, Any]:
    """The one target entry of the profiles.yml rendered for ``mapping``."""
    profile = yaml.safe_load(render_profiles_yml(profile_from_dict(mapping)))[PROFILE_NAME]
    return profile["outputs"][profile["target"]]


def files_containing(root: Path, text: str) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and text.encode() in path.read_bytes()]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_fixture_project("redshift_small", tmp_path_factory.mktemp("redshift"))


# -- rendering and validation ----------------------------------------------------------------
@pytest.mark.parametrize("form", FORMS)
def test_each_form_renders_the_profile_dbt_redshift_reads(form: str) -> None:
    assert rendered_output(FORMS[form]) == RENDERED[form]


@pytest.mark.parametrize(
    "form", [name for name, mapping in FORMS.items() if "password_env" in mapping or "access_key_id_env" in mapping]
)
def test_secrets_travel_as_variable_names_only(form: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    mapping = FORMS[form]
    spec = RunSpec(project_dir="/srv/dbt/shop", profile=mapping)
    text = render_profiles_yml(profile_from_dict(mapping))
    for value in SECRETS.values():
        assert value not in spec.to_json() and value not in text
    secrets = {key: value for key, value in rendered_output(mapping).items() if ENV_REF.match(str(value))}
    assert secrets, "the form should render at least one secret"
    for key, value in secrets.items():
        assert ENV_REF.match(value).group(1) == mapping[f"{key}_env"]  # type: ignore[union-attr]


BAD = {
    "password-without-variable": (
        {**FORMS["password"], "password_env": None}, "needs password_env: the variable holding the password"),
    "password-without-user": ({**FORMS["password"], "user": None}, "(method 'database') needs user"),
    "password-with-cluster": (
        {**FORMS["password"], "cluster_id": "example"},
        "cluster_id only apply to IAM auth: drop them, or set method to 'iam' or 'iam_role'"),
    "iam-without-cluster": (
        {**FORMS["iam-user-keys"], "cluster_id": None},
        "on a provisioned cluster needs cluster_id (dbt-redshift does not read it from host); "
        "for Redshift Serverless set is_serverless: true"),
    "iam-without-region": (
        {**FORMS["iam-user-profile"], "region": None},
        "needs region: the host 'warehouse.corp.example.com' is not an AWS endpoint"),
    "iam-without-user": ({**FORMS["iam-user-keys"], "user": None}, "(method 'iam') needs user"),
    "iam-with-password": (
        {**FORMS["iam-user-keys"], "password_env": PASSWORD_ENV}, "takes no password: drop password_env"),
    "iam-half-keys": (
        {**FORMS["iam-user-keys"], "secret_access_key_env": None},
        "give both access_key_id_env and secret_access_key_env"),
    "iam-profile-and-keys": (
        {**FORMS["iam-user-keys"], "iam_profile": "etl"},
        "give iam_profile or access_key_id_env/secret_access_key_env, not both"),
    "iam-role-with-user": (
        {**FORMS["iam-role"], "user": "loader"}, "signs in as the AWS identity itself, so user would be ignored"),
    "iam-role-with-keys": (
        {**FORMS["iam-role"], "iam_profile": None, "access_key_id_env": KEY_ID_ENV,
         "secret_access_key_env": SECRET_KEY_ENV},
        "so access_key_id_env would be ignored"),
    "serverless-with-cluster": (
        {**FORMS["serverless-iam-role"], "cluster_id": "example"},
        "drop cluster_id (serverless_work_group, or a workgroup endpoint as host, names the workgroup)"),
    "workgroup-without-serverless": (
        {**FORMS["iam-user-profile"], "serverless_work_group": "analytics"},
        "serverless_work_group only apply to Redshift Serverless: set is_serverless: true"),
    "serverless-db-groups": (
        {**FORMS["serverless-iam-user"], "db_groups": ["loaders"]},
        "db_groups only apply to a provisioned cluster"),
    "identity-center": (
        {**FORMS["iam-role"], "method": "browser_identity_center"},
        "is not a built-in mapping: give a profiles.yml with profiles_dir"),
    "raw-secret": ({**FORMS["iam-user-profile"], "secret_access_key": "sk"}, "name the environment variable instead"),
}  # fmt: skip


@pytest.mark.parametrize("mapping, message", BAD.values(), ids=BAD.keys())
def test_a_bad_combination_is_refused_with_the_fix(mapping: dict[str, Any], message: str) -> None:
    # Refused where the spec is made, before anything is sent to a worker.
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        RunSpec(project_dir="/srv/dbt/shop", profile=mapping)


# -- dbt accepts every form --------------------------------------------------------------------
@pytest.mark.parametrize("form", FORMS)
def test_dbt_parse_and_ls_accept_the_form(form: str, project: Path) -> None:
    # Neither command connects: the hosts do not resolve here, and no AWS call is made.
    spec = RunSpec(project_dir=str(project), profile=FORMS[form])
    workspace = Workspace.create(spec, f"forms-{form}", "parse")
    env = {**SECRETS, "AWS_EC2_METADATA_DISABLED": "true"}
    parse = DbtInvocation(parse_command(spec, workspace), cwd=spec.project_dir, env=env)
    parse.run()
    assert (parse.success, parse.error) == (True, None)
    manifest = json.loads((workspace.target_path / "manifest.json").read_text())
    assert manifest["metadata"]["adapter_type"] == "redshift"

    listing = DbtInvocation(list_command(spec, workspace), cwd=spec.project_dir, env=env)
    listing.run()
    assert (listing.success, listing.error) == (True, None)
    listed = {json.loads(line)["unique_id"] for line in listing.result.result}
    assert "model.redshift_small.orders_log" in listed and "seed.redshift_small.raw_orders" in listed
    assert len(listed) == 7
    for value in SECRETS.values():
        assert files_containing(workspace.root, value) == []


# -- what dbt-redshift makes of each form --------------------------------------------------------
def credentials_of(mapping: dict[str, Any], env: dict[str, str]) -> Any:
    """The RedshiftCredentials dbt makes of the profile rendered for ``mapping`` (``env_var()`` resolved by dbt)."""
    from dbt.adapters.redshift.connections import RedshiftCredentials
    from dbt.config.profile import Profile
    from dbt.config.renderer import ProfileRenderer
    from dbt_common.context import set_invocation_context

    set_invocation_context(env)
    raw = yaml.safe_load(render_profiles_yml(profile_from_dict(mapping)))[PROFILE_NAME]
    _, data = Profile.render_profile(raw, PROFILE_NAME, None, ProfileRenderer({}))
    data = {key: value for key, value in data.items() if key not in ("type", "threads")}
    return RedshiftCredentials.from_dict(RedshiftCredentials.translate_aliases(data))


def driver_arguments(credentials: Any) -> dict[str, Any]:
    """The arguments dbt-redshift's connection code passes to redshift_connector.connect.

    Only the driver's connect, which would reach AWS or Redshift, is replaced by a recorder.
    """
    from dbt.adapters.redshift import connections

    seen: dict[str, Any] = {}

    def record(**kwargs: Any) -> None:
        seen.update(kwargs)
        raise ConnectionAbortedError("recorded")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(connections.redshift_connector, "connect", record)
        with pytest.raises(ConnectionAbortedError):
            connections.get_connection_method(credentials)()
    return seen


def raw_credentials(**fields: Any) -> Any:
    """RedshiftCredentials as a hand-written profiles.yml would give them, bypassing the mapping."""
    from dbt.adapters.redshift.connections import RedshiftCredentials

    return RedshiftCredentials.from_dict({"port": 5439, "database": "analytics", "schema": "staging", **fields})


@pytest.mark.parametrize("form", FORMS)
def test_dbt_redshift_turns_the_form_into_driver_arguments(form: str) -> None:
    arguments = driver_arguments(credentials_of(FORMS[form], dict(SECRETS)))
    expected = DRIVER_ARGUMENTS[form]
    assert {key: arguments.get(key) for key in expected} == expected
    assert (arguments["host"], arguments["database"]) == (FORMS[form]["host"], "analytics")


REFUSED_AT_CONNECT = {
    # dbt-redshift does not read the cluster from an AWS host name.
    "iam-without-cluster": (
        {"method": "iam", "host": PROVISIONED_HOST, "user": "loader"},
        "'cluster_id' must be provided for provisioned cluster"),
    "serverless-iam-without-user": (
        {"method": "iam", "host": WORKGROUP_HOST}, "'user' field(s) are required for 'iam' credentials method"),
    "password-without-password": (
        {"host": PROVISIONED_HOST, "user": "loader"}, "'password' field(s) are required for 'database'"),
    "password-without-user": (
        {"host": PROVISIONED_HOST, "password": "pw"}, "'user' field(s) are required for 'database'"),
}  # fmt: skip


@pytest.mark.parametrize("fields, message", REFUSED_AT_CONNECT.values(), ids=REFUSED_AT_CONNECT.keys())
def test_dbt_redshift_itself_refuses_only_when_it_connects(fields: dict[str, Any], message: str) -> None:
    from dbt.adapters.exceptions import FailedToConnectError
    from dbt.adapters.redshift.connections import get_connection_method

    credentials = raw_credentials(**fields)  # dbt's own validation (what parse and ls run) lets it through
    with pytest.raises(FailedToConnectError, match=re.escape(message)):
        get_connection_method(credentials)


IGNORED = {
    "cluster-on-serverless": (
        {"method": "iam_role", "host": WORKGROUP_HOST, "cluster_id": "example"}, {"cluster_identifier": None}),
    "profile-beside-keys": (
        {"method": "iam", "host": PROVISIONED_HOST, "cluster_id": "example", "user": "loader", "iam_profile": "etl",
         "access_key_id": "AKIA", "secret_access_key": "sk"},
        {"profile": None, "access_key_id": "AKIA"}),
    "user-and-keys-with-iam-role": (
        {"method": "iam_role", "host": PROVISIONED_HOST, "cluster_id": "example", "user": "loader",
         "access_key_id": "AKIA", "secret_access_key": "sk"},
        {"db_user": None, "access_key_id": None}),
    "iam-fields-with-password": (
        {"host": PROVISIONED_HOST, "user": "loader", "password": "pw", "cluster_id": "example", "iam_profile": "etl"},
        {"cluster_identifier": None, "profile": None, "iam": None}),
    "workgroup-on-a-cluster": (
        {"method": "iam", "host": PROVISIONED_HOST, "cluster_id": "example", "user": "loader",
         "serverless_work_group": "analytics", "serverless_acct_id": "123456789012"},
        {"serverless_work_group": None, "serverless_acct_id": None}),
}  # fmt: skip


@pytest.mark.parametrize("fields, expected", IGNORED.values(), ids=IGNORED.keys())
def test_dbt_redshift_silently_ignores_what_the_mapping_refuses(fields: dict[str, Any], expected: dict) -> None:
    arguments = driver_arguments(raw_credentials(**fields))
    assert {key: arguments.get(key) for key in expected} == expected


def test_the_credential_calls_of_iam_role_and_serverless_take_no_user_or_groups() -> None:
    # Why db_groups / autocreate are refused there: AWS's API (botocore's model of it) has no such inputs.
    import botocore.session

    session = botocore.session.get_session()

    def inputs(service: str, operation: str) -> set[str]:
        return set(session.get_service_model(service).operation_model(operation).input_shape.members)

    assert {"DbUser", "DbGroups", "AutoCreate"} <= inputs("redshift", "GetClusterCredentials")
    for service, operation in (("redshift", "GetClusterCredentialsWithIAM"), ("redshift-serverless", "GetCredentials")):
        assert not {"DbUser", "DbGroups", "AutoCreate", "dbUser", "dbGroups"} & inputs(service, operation)


def test_the_driver_reads_region_and_workgroup_from_aws_host_names() -> None:
    # Why the mapping asks for no region (or workgroup) when the host is an AWS endpoint.
    from redshift_connector.redshift_property import RedshiftProperty

    provisioned, serverless = RedshiftProperty(), RedshiftProperty()
    provisioned.put("host", PROVISIONED_HOST)
    serverless.put("host", WORKGROUP_HOST)
    for info in (provisioned, serverless):
        info.set_region_from_host()
    serverless.set_serverless_work_group_from_host()
    assert (provisioned.region, serverless.region, serverless.serverless_work_group) == (
        "eu-west-1", "eu-west-1", "analytics",
    )  # fmt: skip
    assert not serverless.is_provisioned_host and serverless.is_serverless_host


# -- IAM auth end to end, AWS played by a loopback server ----------------------------------------
TEMPORARY_PASSWORD = "iam-temp-pw-0c4e"
PROFILE_KEY_ID, PROFILE_SECRET = "AKIAETLPROFILEEXAMPLE", "sk-etl-profile-0c4e"
CHAIN_KEY_ID, CHAIN_SECRET = "AKIADEFAULTCHAINEXAMPLE", "sk-default-chain-0c4e"
#: What each IAM form changes to reach the proxy: the host is no AWS name any more, so
#: the region is given, and a serverless target is named by flag and workgroup.
LIVE = {
    "iam-user-keys": {"region": "eu-west-1"},
    "iam-user-profile": {},
    "iam-role": {"region": "eu-west-1"},
    "serverless-iam-role": {"region": "eu-west-1", "is_serverless": True, "serverless_work_group": "analytics"},
    "serverless-iam-user": {},
}
#: The credential call each form makes to AWS: service, access key id, action, parameters (a subset).
CREDENTIAL_CALLS = {
    "iam-user-keys": ("redshift", SECRETS[KEY_ID_ENV], "GetClusterCredentials", {
        "DbUser": "loader", "DbName": "test", "ClusterIdentifier": "example",
        "DbGroups.DbGroup.1": "loaders", "AutoCreate": "true"}),
    "iam-user-profile": ("redshift", PROFILE_KEY_ID, "GetClusterCredentials", {
        "DbUser": "loader", "DbName": "test", "ClusterIdentifier": "example"}),
    "iam-role": ("redshift", PROFILE_KEY_ID, "GetClusterCredentialsWithIAM", {
        "DbName": "test", "ClusterIdentifier": "example"}),
    "serverless-iam-role": ("redshift-serverless", CHAIN_KEY_ID, "GetCredentials", {
        "dbName": "test", "workgroupName": "analytics"}),
    "serverless-iam-user": ("redshift-serverless", SECRETS[KEY_ID_ENV], "GetCredentials", {
        "dbName": "test", "workgroupName": "analytics"}),
}  # fmt: skip


@pytest.fixture(scope="module")
def iam_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A TLS proxy that takes only the temporary password, a fake AWS issuing it, and the environment."""
    root = tmp_path_factory.mktemp("iam")
    context, ca_file = throwaway_tls(root / "tls")
    config = root / "aws-config"
    config.write_text(
        f"[profile etl]\naws_access_key_id = {PROFILE_KEY_ID}\naws_secret_access_key = {PROFILE_SECRET}\n"
    )
    with (
        RedshiftProxy(password=TEMPORARY_PASSWORD, tls=context) as proxy,
        FakeAWS("postgres", TEMPORARY_PASSWORD) as aws,
    ):
        env = {
            **SECRETS, **aws.env(), "SSL_CERT_FILE": str(ca_file),
            "AWS_CONFIG_FILE": str(config), "AWS_SHARED_CREDENTIALS_FILE": str(root / "no-credentials"),
            # The default chain, for the forms that name no AWS identity.
            "AWS_ACCESS_KEY_ID": CHAIN_KEY_ID, "AWS_SECRET_ACCESS_KEY": CHAIN_SECRET,
        }  # fmt: skip
        yield {"proxy": proxy, "aws": aws, "env": env}


def debug_command(spec: RunSpec, workspace: Workspace) -> list[str]:
    """``dbt debug`` against the workspace's rendered profile: it opens one connection."""
    profiles = workspace.profiles_dir(spec) or ""
    return ["debug", "--project-dir", spec.project_dir, "--log-path", str(workspace.log_path),
            "--profiles-dir", profiles, "--profile", PROFILE_NAME]  # fmt: skip


@pytest.mark.parametrize("form", LIVE)
def test_iam_form_fetches_credentials_and_connects(form: str, project: Path, iam_world: dict[str, Any]) -> None:
    proxy, aws = iam_world["proxy"], iam_world["aws"]
    mapping = {**FORMS[form], "host": "127.0.0.1", "port": proxy.port, "dbname": "test", **LIVE[form]}
    spec = RunSpec(project_dir=str(project), profile=mapping)
    workspace = Workspace.create(spec, f"iam-{form}", "debug")
    calls_before, tls_before = len(aws.calls), proxy.tls_sessions
    debug = DbtInvocation(debug_command(spec, workspace), cwd=spec.project_dir, env=iam_world["env"])
    debug.run()
    log = (workspace.log_path / "dbt.log").read_text()
    assert (debug.success, debug.error) == (True, None), log[-3000:]
    assert "Connection test: [OK connection ok]" in re.sub(r"\x1b\[[0-9;]*m", "", log)
    # The driver asked AWS for temporary credentials as the form says, signed with the
    # identity the form names, then signed in over TLS with the password AWS issued.
    service, key_id, action, params = CREDENTIAL_CALLS[form]
    call = aws.calls[-1]
    assert len(aws.calls) > calls_before
    assert (call["service"], call["region"], call["access_key_id"], call["action"]) == (
        service,
        "eu-west-1",
        key_id,
        action,
    )
    assert {key: call["params"].get(key) for key in params} == params
    if form.startswith("iam-role") or form.startswith("serverless"):
        assert "DbUser" not in call["params"]  # only GetClusterCredentials takes a user
    assert proxy.tls_sessions > tls_before
    if not form.startswith("serverless"):
        # 127.0.0.1 is no AWS name, so the driver first asks whether it is a custom domain (no, says
        # the fake, as AWS would), then asks again by cluster_id.
        assert "DescribeCustomDomainAssociations" in [c["action"] for c in aws.calls[calls_before:]]
    for secret in (SECRETS[SECRET_KEY_ENV], PROFILE_SECRET, CHAIN_SECRET, TEMPORARY_PASSWORD):
        assert files_containing(workspace.root, secret) == []


# -- a real build through the proxy -----------------------------------------------------------------
PROXY_PASSWORD = "proxy-pw-51d0"


@pytest.fixture(scope="module")
def proxy() -> Iterator[RedshiftProxy]:
    """The loopback proxy in front of the local PostgreSQL, checking PROXY_PASSWORD."""
    with RedshiftProxy(password=PROXY_PASSWORD) as running:
        yield running


@pytest.fixture(scope="module")
def built(project: Path, proxy: RedshiftProxy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One plain ``dbt build`` of redshift_small with dbt-redshift, through the proxy."""
    schema = unique_schema("dbt_celery_redshift")
    profiles = write_profiles_dir(
        profile_from_dict(proxy_profile(proxy, schema, PASSWORD_ENV)), tmp_path_factory.mktemp("profiles")
    )
    env = {**os.environ, PASSWORD_ENV: PROXY_PASSWORD}

    def dbt(*args: str) -> subprocess.CompletedProcess[str]:
        command = [
            DBT,
            *args,
            "--project-dir",
            str(project),
            "--profiles-dir",
            str(profiles),
            "--profile",
            PROFILE_NAME,
        ]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    try:
        yield {"schema": schema, "dbt": dbt, "build": dbt("build")}
    finally:
        drop_schemas(schema)


def test_dbt_build_with_dbt_redshift_lands_in_postgresql(built: dict, project: Path, proxy: RedshiftProxy) -> None:
    build = built["build"]
    assert build.returncode == 0, build.stdout[-3000:]
    assert "Done. PASS=7 WARN=0 ERROR=0 SKIP=0" in build.stdout
    results = json.loads((project / "target" / "run_results.json").read_text())
    assert {result["unique_id"].split(".")[2]: result["status"] for result in results["results"]} == {
        "raw_orders": "success",
        "stg_orders": "success",
        "customer_totals": "success",
        "orders_log": "success",
        "unique_customer_totals_customer": "pass",
        "not_null_customer_totals_customer": "pass",
        "unique_orders_log_id": "pass",
    }
    connection = postgres_connection()
    try:
        kinds, rows = schema_contents(connection, built["schema"])
    finally:
        connection.close()
    assert kinds == REDSHIFT_SMALL_KINDS
    assert rows == REDSHIFT_SMALL_ROWS
    # The driver's Redshift-only startup parameters were dropped on the way, and only those.
    assert proxy.stripped == {"client_protocol_version", "driver_version", "os_version", "driver_discovery_version"}
    assert proxy.sessions > 0 and proxy.ssl_requests == 0


def test_an_incremental_update_needs_redshift_catalog_functions(built: dict) -> None:
    # The second run of an incremental model asks for its columns through a Redshift-only
    # function; PostgreSQL has none, so only first builds are tested through the proxy.
    assert built["build"].returncode == 0
    again = built["dbt"]("run", "--select", "orders_log")
    assert again.returncode == 1
    assert "function pg_get_late_binding_view_cols() does not exist" in again.stdout


def test_the_proxy_checks_the_password_and_refuses_tls(proxy: RedshiftProxy) -> None:
    common = {"host": "127.0.0.1", "port": proxy.port, "database": "test", "user": "postgres"}
    with pytest.raises(redshift_connector.ProgrammingError, match="password authentication failed"):
        redshift_connector.connect(**common, password="wrong", ssl=False)
    with pytest.raises(redshift_connector.InterfaceError, match="Server refuses SSL"):
        redshift_connector.connect(**common, password=PROXY_PASSWORD, ssl=True, sslmode="verify-ca")
    connection = redshift_connector.connect(**common, password=PROXY_PASSWORD, ssl=False)
    try:
        cursor = connection.cursor()
        cursor.execute("select current_user, current_database()")
        assert cursor.fetchall() == (["postgres", "test"],)
    finally:
        connection.close()
    # psycopg2 through the same proxy: the proxy is transparent for a PostgreSQL client too.
    plain = psycopg2.connect(
        host="127.0.0.1", port=proxy.port, dbname="test", user="postgres", password=PROXY_PASSWORD, sslmode="disable"
    )
    try:
        assert plain.server_version > 0
    finally:
        plain.close()


def test_iam_auth_needs_tls_in_the_driver() -> None:
    # Why the IAM tests need the proxy's TLS: the driver stops before any network call.
    with pytest.raises(redshift_connector.InterfaceError, match="SSL must be enabled when using IAM"):
        redshift_connector.connect(
            iam=True, host="127.0.0.1", port=1, database="test", db_user="loader", cluster_identifier="example",
            region="eu-west-1", ssl=False, access_key_id="AKIA", secret_access_key="sk",
        )  # fmt: skip


def test_the_proxy_trims_a_distribution_server_version() -> None:
    from packaging.version import InvalidVersion, parse

    debian = b"15.20 (Debian 15.20-0+deb12u1)"
    with pytest.raises(InvalidVersion):
        parse(debian.decode())  # what redshift_connector does with server_version
    body = b"server_version\x00" + debian + b"\x00"
    status = b"S" + struct.pack("!i", len(body) + 4) + body
    ready = b"Z" + struct.pack("!i", 5) + b"I"
    relayed = ServerHandshake().feed(status + ready + b"later bytes pass as they are")
    assert (
        relayed
        == b"S" + struct.pack("!i", 25) + b"server_version\x0015.20\x00" + ready + b"later bytes pass as they are"
    )
