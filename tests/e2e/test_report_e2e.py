"""``dbt-celery report`` on a real run: shared worker processes, real dbt, the CLI as a subprocess."""

from __future__ import annotations

import json
import re

from tests.e2e.test_cli import dbt_celery
from tests.helpers import copy_project


def test_report_of_a_real_run_with_a_failure_and_a_fallback(redis_workers, worker_env, tmp_path):
    project = copy_project("edge_cases", tmp_path)
    profile = json.dumps({"type": "duckdb", "path": str(tmp_path / "e.duckdb"), "threads": 2})
    # boom fails in the producer's build, then again in its consumer's inline (fallback) build.
    run = dbt_celery(
        "run", str(project), "--profile-json", profile, "--select", "people", "base", "boom", "boom_child", "--json",
        env=worker_env,
    )  # fmt: skip
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    document = json.loads(run.stdout)
    nodes = document["nodes"]
    assert nodes["model.edge_cases.boom"]["resolved_by"] == "fallback"
    assert nodes["seed.edge_cases.people"]["rows_affected"] == 3  # dbt reports it as 3.0
    assert re.fullmatch(r"Thread-\d+ \(worker\)", nodes["model.edge_cases.base"]["thread"])

    html_path, png_path = tmp_path / "x.html", tmp_path / "x.png"
    report = dbt_celery("report", document["run_id"], "--out", str(html_path), "--png", str(png_path), env=worker_env)

    assert report.returncode == 0, report.stderr
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = html_path.read_text()
    for unique_id in nodes:
        assert f'data-node="{unique_id}"' in page
    lanes = dict(re.findall(r'<g class="bar [^"]*" data-node="([^"]+)" data-lane="([^"]+)"', page))
    assert lanes["model.edge_cases.boom"] == "fallback"
    assert lanes["model.edge_cases.base"] == nodes["model.edge_cases.base"]["thread"]
    assert "model.edge_cases.boom_child" not in lanes  # never built
    assert "boom" in page[page.index("<h2>Failures") :]
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page)

    # The final table of `status` shows rows affected.
    shown = dbt_celery("status", document["run_id"], env=worker_env)
    assert re.search(r"people\s+│ seed\s+│ success\s+│ success\s+│ producer\s+│\s+3 │", shown.stdout), shown.stdout
