"""Helpers and fixtures for the tests of the dbt layer (invocation, project, profiles).

Test modules import what they use explicitly, e.g.
``from dbt_fixtures import isolated_workspaces, copy_fixture_project``. Nothing here
writes into the repository: projects are copied into temporary folders, and every
dbt workspace lands under a temporary ``DBT_CELERY_WORKSPACE_DIR``.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

import psycopg2
import pytest

from dbt_celery.core.records import NodeEvent
from dbt_celery.core.spec import RunSpec
from dbt_celery.dbt.commands import WORKSPACE_ENV, Workspace, build_command
from dbt_celery.dbt.invocation import DbtInvocation
from tests.helpers import JAFFLE_SHOP, copy_project  # noqa: F401 - re-exported for the dbt tests

#: The local PostgreSQL the tests use (trust auth: any password is accepted).
POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}

#: Fixture projects are copied with the suite's one helper.
copy_fixture_project = copy_project


@pytest.fixture(scope="module", autouse=True)
def isolated_workspaces(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point DBT_CELERY_WORKSPACE_DIR at a temp folder for the whole module.

    Autouse in every module that imports it, so no workspace lands in a project's target/.
    """
    root = tmp_path_factory.mktemp("workspaces")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(WORKSPACE_ENV, str(root))
        yield root


# -- PostgreSQL ----------------------------------------------------------------------------
def postgres_connection() -> Any:
    connection = psycopg2.connect(**POSTGRES)
    connection.autocommit = True
    return connection


def unique_schema(prefix: str) -> str:
    """A schema name no other test run uses."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def drop_schemas(*schemas: str) -> None:
    with postgres_connection() as connection, connection.cursor() as cursor:
        for schema in schemas:
            cursor.execute(f'drop schema if exists "{schema}" cascade')
    connection.close()


def relations_in(schema: str) -> set[str]:
    """Tables and views in a PostgreSQL schema."""
    connection = postgres_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute("select table_name from information_schema.tables where table_schema = %s", (schema,))
            return {row[0] for row in cursor.fetchall()}
    finally:
        connection.close()


# -- dbt builds ---------------------------------------------------------------------------
class Build:
    """One ``dbt build`` through DbtInvocation: its stream, its run_results.json, its verdict."""

    def __init__(self, spec: RunSpec, workspace: Workspace, invocation: DbtInvocation, events: list[NodeEvent]):
        self.spec = spec
        self.workspace = workspace
        self.invocation = invocation
        self.events = events
        #: For PostgreSQL builds: the schema, and the relations found in it afterwards.
        self.schema: str | None = None
        self.relations: set[str] = set()

    @property
    def final(self) -> dict[str, NodeEvent]:
        """The last stream record of every node."""
        return {event.unique_id: event for event in self.events}

    @property
    def run_results(self) -> dict[str, Any]:
        return json.loads(self.workspace.run_results.read_text())

    @property
    def results(self) -> dict[str, dict[str, Any]]:
        """run_results.json entries by unique id."""
        return {result["unique_id"]: result for result in self.run_results["results"]}

    def node(self, name: str) -> NodeEvent:
        """The final record of the one node whose unique id has ``name`` as its name part."""
        matches = [event for uid, event in self.final.items() if uid.split(".")[2] == name]
        assert len(matches) == 1, f"expected one node named {name!r}, got {sorted(self.final)}"
        return matches[0]


def start_build(spec: RunSpec, run_id: str, mode: str, env: Mapping[str, str]) -> tuple[Workspace, DbtInvocation]:
    """Create the workspace and the invocation of ``dbt build`` for ``spec`` (not started)."""
    workspace = Workspace.create(spec, run_id, "producer")
    invocation = DbtInvocation(build_command(spec, workspace), mode=mode, cwd=spec.project_dir, env=env)
    return workspace, invocation


def run_build(spec: RunSpec, run_id: str, mode: str, env: Mapping[str, str]) -> Build:
    """Run ``dbt build`` for ``spec`` in ``mode`` and collect every streamed event."""
    workspace, invocation = start_build(spec, run_id, mode, env)
    events = list(invocation)
    return Build(spec, workspace, invocation, events)
