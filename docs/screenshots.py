"""Regenerate docs/flower-tasks.png and docs/flower-task.png: a real Flower over a run of the example.

    python docs/screenshots.py [--out DIR]

Starts two local workers (:class:`~dbt_celery.celery.workers.LocalWorkers`) and Flower on a
Redis database, builds a copy of examples/jaffle_shop on DuckDB through them, and takes
headless screenshots of Flower's task list and of one node's task page. Needs Redis and
Debian's ``chromium`` (``apt-get install -y chromium``). The database is the one named by
``DBT_CELERY_SCREENSHOT_REDIS_URL`` (left as it is), else the highest empty one of the local
Redis, taken as the test suite takes one and emptied at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python docs/screenshots.py` puts docs/ first, not the repository
    sys.path.insert(0, str(REPO))

#: Chromium's options for one screenshot; the task list fills itself by JavaScript (datatables).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=8000"]
#: The window of every screenshot.
WINDOW = "1920,1000"
#: Seconds the run of the example may take.
RUN_TIMEOUT = 300.0
#: The node whose task page is shot.
NODE = "model.jaffle_shop.customers"


def main(argv: list[str] | None = None) -> int:
    """Build the example under Flower and write the screenshots; 0 when both were written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="folder of the PNG files (docs/)")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium is not installed (Debian: apt-get install -y chromium)", file=sys.stderr)
        return 2
    given = os.environ.get("DBT_CELERY_SCREENSHOT_REDIS_URL")
    redis_url = given or _take_redis_db()
    try:
        with tempfile.TemporaryDirectory(prefix="dbt-celery-shots-") as tmp:
            pages = _build_under_flower(Path(tmp), redis_url, chromium, args.out)
    finally:
        if not given:
            import redis

            redis.Redis.from_url(redis_url).flushdb()
    for page in pages:
        print(f"wrote {page}")
    return 0


def _take_redis_db() -> str:
    from tests.conftest import REDIS_SERVER, free_redis_db

    return f"{REDIS_SERVER}/{free_redis_db()}"


def _build_under_flower(root: Path, redis_url: str, chromium: str, out: Path) -> list[Path]:
    from dbt_celery.celery.config import create_app, settings_from_env
    from dbt_celery.celery.workers import LocalWorkers
    from dbt_celery.core.plan import consumer_task_id, producer_task_id
    from dbt_celery.core.spec import RunSpec
    from dbt_celery.run import submit
    from tests.flower_process import Flower
    from tests.helpers import JAFFLE_SHOP, copy_project

    env = {
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "CELERY_CONFIG_MODULE": "dbt_celery.celery.no_config",
        "DBT_CELERY_WORKSPACE_DIR": str(root / "workspaces"),
    }
    app = create_app(settings_from_env(env))
    project = copy_project(JAFFLE_SHOP, root)
    spec = RunSpec(project_dir=str(project), profile={"type": "duckdb", "path": str(root / "jaffle_shop.duckdb")})
    with LocalWorkers(env, root / "logs") as workers:
        names = [workers.node_name(role) for role in workers.roles]
        with Flower(redis_url, root / "flower", env, names) as flower:
            run = submit(spec, app=app)
            status = run.wait(RUN_TIMEOUT)
            if status.state != "success":
                raise SystemExit(f"the example's run ended {status.state}: {status.to_dict()}")
            wanted = [producer_task_id(run.id), *(consumer_task_id(run.id, uid) for uid in status.nodes)]

            def settled() -> bool | None:
                """Every task of the run over, its watchdog's last round (up to 15 s after the run) too."""
                tasks = flower.tasks()
                of_run = [task for task in tasks.values() if run.id in (task.get("kwargs") or "")]
                over = all(task.get("state") == "SUCCESS" for task in of_run)
                return True if over and all(tid in tasks for tid in wanted) else None

            flower.wait_for(settled, 60, "Flower did not show every task's end")
            pages = {
                out / "flower-tasks.png": f"{flower.url}/tasks",
                out / "flower-task.png": f"{flower.url}/task/{consumer_task_id(run.id, NODE)}",
            }
            for path, url in pages.items():
                _screenshot(chromium, url, path, root / "chromium")
    return list(pages)


def _screenshot(chromium: str, url: str, path: Path, profile: Path) -> None:
    """One headless screenshot of ``url`` into ``path`` (a fresh profile: no saved table state)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(profile, ignore_errors=True)
    command = [
        chromium, *CHROMIUM_ARGS, f"--user-data-dir={profile}", f"--window-size={WINDOW}",
        f"--screenshot={path}", url,
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    if not path.exists() or path.stat().st_size == 0:
        raise SystemExit(f"chromium wrote no screenshot of {url}")


if __name__ == "__main__":
    raise SystemExit(main())
