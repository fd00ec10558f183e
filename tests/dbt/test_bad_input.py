"""Bad input fails early with a dbt-celery error whose message says what is wrong.

Each case goes through the entry points a run uses (RunSpec, Workspace, ProjectGraph.load)
and asserts on the text a user would read.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dbt_celery.core.spec import RunSpec
from dbt_celery.dbt.commands import Workspace
from dbt_celery.dbt.project import ProjectGraph
from dbt_celery.errors import (
    ConfigurationError,
    DbtCeleryError,
    DbtInvocationError,
    ProfileError,
    ProjectNotFound,
    SelectionError,
)
from tests.dbt.dbt_fixtures import copy_fixture_project, isolated_workspaces  # noqa: F401 - autouse


@pytest.fixture(scope="module")
def edge_project(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("bad-input")
    project = copy_fixture_project("edge_cases", root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DBT_DUCKDB_PATH", str(root / "edge.duckdb"))
        yield project


def load(spec: RunSpec, label: str) -> ProjectGraph:
    return ProjectGraph.load(spec, Workspace.create(spec, "bad-input", label))


# -- the project ----------------------------------------------------------------------------
def test_missing_project_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ProjectNotFound) as caught:
        load(RunSpec(project_dir=str(missing)), "missing")
    assert str(caught.value) == f"dbt project directory not found: {missing}"


def test_directory_without_dbt_project_yml(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    with pytest.raises(ProjectNotFound) as caught:
        load(RunSpec(project_dir=str(tmp_path)), "not-a-project")
    assert str(caught.value) == f"{tmp_path} is not a dbt project: it has no dbt_project.yml"


# -- the profile ----------------------------------------------------------------------------
def test_unknown_target(edge_project: Path) -> None:
    spec = RunSpec(project_dir=str(edge_project), profiles_dir=str(edge_project), target="nope")
    with pytest.raises(ProfileError) as caught:
        load(spec, "unknown-target")
    message = str(caught.value)
    assert f"dbt could not load the profile for {edge_project}" in message
    assert "does not have a target named 'nope'" in message
    # ... and names the targets that do exist.
    assert "duckdb" in message and "postgres" in message


def test_broken_profiles_yml(edge_project: Path, tmp_path: Path) -> None:
    (tmp_path / "profiles.yml").write_text("edge_cases:\n  target: duckdb\n  outputs: [unclosed\n")
    spec = RunSpec(project_dir=str(edge_project), profiles_dir=str(tmp_path))
    with pytest.raises(DbtCeleryError) as caught:
        load(spec, "broken-profiles")
    message = str(caught.value)
    assert isinstance(caught.value, ProfileError), f"{type(caught.value).__name__}: {message}"
    assert "profiles.yml" in message
    assert "Syntax error" in message


def test_profile_missing_from_profiles_yml(edge_project: Path, tmp_path: Path) -> None:
    (tmp_path / "profiles.yml").write_text(
        "some_other_project:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n"
    )
    spec = RunSpec(project_dir=str(edge_project), profiles_dir=str(tmp_path))
    with pytest.raises(ProfileError) as caught:
        load(spec, "missing-profile")
    assert "Could not find profile named 'edge_cases'" in str(caught.value)


def test_a_broken_model_is_not_reported_as_a_profile_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = copy_fixture_project("edge_cases", tmp_path)
    (project / "models" / "customer_targets.sql").write_text("select {{ ref('base' }} as id\n")
    monkeypatch.setenv("DBT_DUCKDB_PATH", str(tmp_path / "edge.duckdb"))
    with pytest.raises(DbtCeleryError) as caught:
        load(RunSpec(project_dir=str(project), profiles_dir=str(project)), "broken-model")
    message = str(caught.value)
    assert "Compilation Error in model customer_targets" in message
    assert "could not load the profile" not in message
    assert type(caught.value) is DbtInvocationError


def test_literal_password_in_a_profile_mapping() -> None:
    mapping = {"type": "postgres", "host": "db", "user": "u", "dbname": "d", "schema": "s", "password": "hunter2"}
    with pytest.raises(ProfileError) as caught:
        RunSpec(project_dir=".", profile=mapping)
    message = str(caught.value)
    assert message == (
        "profile field(s) password would put a secret in the run spec; "
        "name the environment variable instead (password_env)"
    )
    assert "hunter2" not in message


@pytest.mark.parametrize(
    "mapping, message",
    [
        (
            {"type": "snowflake", "account": "x"},
            "unknown profile type 'snowflake': expected one of duckdb, postgres, redshift",
        ),
        ({"type": "duckdb", "path": "x.duckdb", "pth": "typo"}, "unknown field(s) for a duckdb profile: pth"),
        ({"type": "postgres", "host": "db"}, "incomplete postgres profile"),
    ],
    ids=["unknown-type", "unknown-field", "incomplete"],
)
def test_other_bad_profile_mappings(mapping: dict, message: str) -> None:
    with pytest.raises(ProfileError, match=re.escape(message)):
        RunSpec(project_dir=".", profile=mapping)


# -- the selection ----------------------------------------------------------------------------
def test_selector_matching_nothing(edge_project: Path) -> None:
    spec = RunSpec(
        project_dir=str(edge_project), profiles_dir=str(edge_project), select=("tag:no_such_tag",), exclude=("boom",)
    )
    with pytest.raises(SelectionError) as caught:
        load(spec, "nothing-selected")
    assert str(caught.value) == (
        "the selection --select tag:no_such_tag --exclude boom matches no node that dbt build would run"
    )


def test_undefined_yaml_selector(edge_project: Path) -> None:
    spec = RunSpec(project_dir=str(edge_project), profiles_dir=str(edge_project), selector="no_such_selector")
    with pytest.raises(SelectionError) as caught:
        load(spec, "undefined-selector")
    message = str(caught.value)
    assert message.startswith("dbt could not resolve the selection")
    assert "no_such_selector" in message


# -- run options ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, message",
    [
        ('{"day": "2026-01-01"', "--vars is not valid JSON or YAML"),
        ("[1, 2]", "--vars must be a JSON object"),
        ("just text", "--vars must be a JSON object"),
    ],
    ids=["unclosed", "list", "scalar"],
)
def test_invalid_vars(value: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RunSpec(project_dir=".", vars=value)
    assert str(caught.value).startswith(message)


def test_valid_vars_are_parsed_like_dbt_does() -> None:
    assert RunSpec(project_dir=".", vars='{"day": "2026-01-01"}').vars == {"day": "2026-01-01"}
    assert RunSpec(project_dir=".", vars="day: '2026-01-01'\nlimit: 3").vars == {"day": "2026-01-01", "limit": 3}


def test_yaml_vars_with_an_unquoted_date_are_accepted_like_dbt_does() -> None:
    # `dbt build --vars 'day: 2026-01-02'` works; the same --vars must work through dbt-celery.
    assert RunSpec(project_dir=".", vars="day: 2026-01-02").vars == {"day": "2026-01-02"}


@pytest.mark.parametrize(
    "options, message",
    [
        ({"invocation": "thread"}, "invocation must be one of in_process, subprocess, not 'thread'"),
        ({"retries": -1}, "retries must be an integer of at least 0, not -1"),
        ({"timeout": 0}, "timeout must be a positive number of seconds"),
        (
            {"profile": {"type": "duckdb", "path": "x"}, "profiles_dir": "."},
            "give either profiles_dir or a built-in profile, not both",
        ),
    ],
    ids=["invocation", "retries", "timeout", "profile-and-profiles-dir"],
)
def test_invalid_run_options(options: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        RunSpec(project_dir=".", **options)


def test_unknown_spec_field_and_bad_json() -> None:
    with pytest.raises(ConfigurationError, match=re.escape("unknown run spec field(s): selekt")):
        RunSpec.from_dict({"project_dir": ".", "selekt": ["a"]})
    with pytest.raises(ConfigurationError, match="run spec is not valid JSON"):
        RunSpec.from_json("{not json")
