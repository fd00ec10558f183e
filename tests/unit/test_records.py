"""Records as scripts read them: timestamps carry their time zone."""

from __future__ import annotations

import datetime

from dbt_celery.core.records import NodeState, utc_iso
from dbt_celery.core.summary import NodeStatus


def test_dbt_naive_utc_timestamps_gain_their_time_zone():
    assert utc_iso("2026-12-02T16:42:06.811884") == "2026-12-02T16:42:06.811884+00:00"
    assert utc_iso("2026-12-02T16:42:06Z") == "2026-12-02T16:42:06+00:00"
    assert utc_iso("2026-12-02T17:42:06+01:00") == "2026-12-02T17:42:06+01:00"  # an explicit zone is kept
    assert utc_iso(0.0) == "1970-01-01T00:00:00+00:00"
    assert utc_iso(None) is None


def test_a_node_in_json_has_only_zoned_timestamps():
    node = NodeStatus(
        "model.p.a", "a", "model", NodeState.SUCCESS,
        started_at=utc_iso("2026-12-02T16:42:06"), finished_at=utc_iso("2026-12-02T16:42:07"), recorded_at=1796229726.9,
    )  # fmt: skip
    data = node.to_dict()
    for field in ("started_at", "finished_at", "recorded_at"):
        assert datetime.datetime.fromisoformat(data[field]).tzinfo is not None, field


def test_epoch_seconds_reads_every_timestamp_form_dbt_writes():
    from dbt_celery.core.records import epoch_seconds

    assert epoch_seconds("1970-01-01T00:01:00") == 60.0  # naive: UTC
    assert epoch_seconds("1970-01-01T00:01:00Z") == 60.0
    assert epoch_seconds("1970-01-01T01:01:00+01:00") == 60.0
    assert epoch_seconds("") is None and epoch_seconds(None) is None and epoch_seconds("yesterday") is None
