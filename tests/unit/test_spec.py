"""RunSpec validation: bad knobs are refused by name, never ignored."""

from __future__ import annotations

import pytest

from dbt_celery.core.spec import RunSpec
from dbt_celery.errors import ConfigurationError


@pytest.mark.parametrize(
    "field, value",
    [
        ("timeout", 0), ("timeout", float("nan")), ("timeout", float("inf")), ("heartbeat_timeout", -1),
        ("poll_max", "1"), ("retry_delay", -0.5), ("rearm_after", float("nan")),
        ("threads", 0), ("retries", -1), ("retries", True), ("threads", 1.5),
    ],
)  # fmt: skip
def test_bad_knobs_are_refused(field, value):
    with pytest.raises(ConfigurationError, match=field):
        RunSpec(project_dir="/p", **{field: value})


def test_a_spec_round_trips_through_json():
    spec = RunSpec(project_dir="/p", select=["a+"], vars={"day": "2026-01-01"}, retries=2, threads=4)
    assert RunSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ConfigurationError, match="unknown run spec field"):
        RunSpec.from_dict({**spec.to_dict(), "password": "x"})


def test_slim_run_flags_are_checked_together():
    with pytest.raises(ConfigurationError, match="need state"):
        RunSpec(project_dir="/p", defer=True)
    with pytest.raises(ConfigurationError, match="only applies with defer"):
        RunSpec(project_dir="/p", state="/s", favor_state=True)
    with pytest.raises(ConfigurationError, match="indirect_selection"):
        RunSpec(project_dir="/p", indirect_selection="lazy")
    assert RunSpec(project_dir="p", state="s", defer=True).resolved().state.startswith("/")


def test_a_state_folder_without_a_manifest_is_a_clear_error(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "dbt_project.yml").write_text("name: p\n")
    with pytest.raises(ConfigurationError, match="has no manifest.json"):
        RunSpec(project_dir=str(project), state=str(tmp_path)).check_project()
