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
