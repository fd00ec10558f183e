"""Synthetic DuckDB dbt projects for the benchmarks: N models in layers, one test per model.

Models sit in layers (``models/layer_07/m_0123.sql``); a model of layer L > 0 depends
on 1 to ``max_parents`` models of earlier layers, at least one of them from layer
L - 1, so the DAG is exactly ``layers`` models deep. Layer-0 models read a seed when
the project has seeds, else nothing. Every model builds ``rows`` rows from DuckDB's
``range()`` (the per-model cost knob) and, unless ``tests=False``, has one ``not_null`` test.

Tables (the default) read their parents (``select count(*) from {{ ref(...) }}``). Views
only *declare* them (dbt's ``-- depends_on: {{ ref(...) }}`` comment) and never query
them: DuckDB binds a view's whole ancestry when it creates it, so views that read their
parents would cost more with every layer, and the ``views`` profile is meant to be the
cheapest node dbt can build.

Nothing here imports dbt or Celery; a project is plain files plus the list of its
nodes in a topological order, which the naive baseline needs.
"""

from __future__ import annotations

import dataclasses
import math
import random
import textwrap
from pathlib import Path

PROJECT_NAME = "bench"
#: Rows each model builds with ``range()``; the per-model cost knob.
DEFAULT_ROWS = 100_000
DEFAULT_MAX_PARENTS = 5
MATERIALIZATIONS = ("table", "view")


@dataclasses.dataclass(frozen=True)
class Shape:
    """What to generate: model count, layers, fan-in, seeds and per-model cost."""

    models: int
    seeds: int = 2
    layers: int | None = None  # default: about sqrt(models), at least 2
    max_parents: int = DEFAULT_MAX_PARENTS
    rows: int = DEFAULT_ROWS
    random_seed: int = 7
    materialized: str = "table"  # table | view
    tests: bool = True  # one not_null test per model

    def __post_init__(self) -> None:
        if self.models < 1:
            raise ValueError(f"a project needs at least one model, not {self.models}")
        if not 1 <= self.max_parents:
            raise ValueError("max_parents must be at least 1")
        if self.seeds < 0 or self.rows < 1:
            raise ValueError("seeds must be >= 0 and rows >= 1")
        if self.materialized not in MATERIALIZATIONS:
            raise ValueError(f"materialized must be one of {MATERIALIZATIONS}, not {self.materialized!r}")

    @property
    def layer_count(self) -> int:
        """How many layers the models are spread over."""
        wanted = self.layers if self.layers is not None else max(2, round(math.sqrt(self.models)))
        return max(1, min(wanted, self.models))


@dataclasses.dataclass(frozen=True)
class Node:
    """One node dbt build runs: its kind, the name ``--select`` accepts, its parents."""

    kind: str  # seed | model | test
    name: str
    parents: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Project:
    """A generated project on disk and its nodes in a topological order."""

    path: Path
    shape: Shape
    nodes: tuple[Node, ...]

    @property
    def model_count(self) -> int:
        """Models in the project."""
        return sum(1 for node in self.nodes if node.kind == "model")

    @property
    def database(self) -> Path:
        """The DuckDB file the harness builds into (one path per project, emptied before each build)."""
        return self.path / f"{PROJECT_NAME}.duckdb"

    def write_profile(self, db_path: Path, threads: int) -> Path:
        """Point the project's profiles.yml at ``db_path`` (a fresh file per measurement)."""
        profile = textwrap.dedent(
            f"""\
            {PROJECT_NAME}:
              target: dev
              outputs:
                dev:
                  type: duckdb
                  path: "{db_path.resolve()}"
                  schema: main
                  threads: {threads}
            """
        )
        (self.path / "profiles.yml").write_text(profile)
        return self.path


def generate(shape: Shape, root: Path) -> Project:
    """Write a project of ``shape`` into ``root/bench_<models>`` and return it."""
    rng = random.Random(shape.random_seed)
    path = root / f"{PROJECT_NAME}_{shape.models}{_suffix(shape)}"
    (path / "models").mkdir(parents=True, exist_ok=True)
    (path / "seeds").mkdir(parents=True, exist_ok=True)
    (path / "dbt_project.yml").write_text(_project_yml(shape.materialized))

    nodes: list[Node] = []
    seeds = [f"seed_{i:02d}" for i in range(1, shape.seeds + 1)]
    for seed in seeds:
        rows = "\n".join(f"{i},{rng.randint(0, 999)}" for i in range(1, 21))
        (path / "seeds" / f"{seed}.csv").write_text(f"id,val\n{rows}\n")
        nodes.append(Node("seed", seed))

    layers = _layers(shape)
    earlier: list[str] = []
    number = 0
    for depth, size in enumerate(layers):
        folder = path / "models" / f"layer_{depth:02d}"
        folder.mkdir(exist_ok=True)
        names = [f"m_{number + i + 1:04d}" for i in range(size)]
        number += size
        previous = earlier[-layers[depth - 1] :] if depth else []
        for index, name in enumerate(names, start=number - size + 1):
            parents = (
                _pick_parents(rng, shape, previous, earlier)
                if depth
                else ([seeds[rng.randrange(len(seeds))]] if seeds else [])
            )
            sql = (_view_sql if shape.materialized == "view" else _model_sql)(parents, shape.rows, index)
            (folder / f"{name}.sql").write_text(sql)
            nodes.append(Node("model", name, tuple(parents)))
            if shape.tests:
                nodes.append(Node("test", f"not_null_{name}_id", (name,)))
        if shape.tests:
            (folder / "schema.yml").write_text(_schema_yml(names))
        earlier.extend(names)
    return Project(path, shape, tuple(nodes))


def _suffix(shape: Shape) -> str:
    """Keeps projects of different kinds but the same size apart (``bench_200``, ``bench_200_rows2000``)."""
    parts = [] if shape.rows == DEFAULT_ROWS else [f"rows{shape.rows}"]
    parts += [] if shape.materialized == "table" else [shape.materialized + "s"]
    parts += [] if shape.tests else ["notests"]
    return "".join(f"_{part}" for part in parts)


def _layers(shape: Shape) -> list[int]:
    count = shape.layer_count
    base, extra = divmod(shape.models, count)
    return [base + (1 if i < extra else 0) for i in range(count)]


def _pick_parents(rng: random.Random, shape: Shape, previous: list[str], earlier: list[str]) -> list[str]:
    wanted = rng.randint(1, min(shape.max_parents, len(earlier)))
    first = rng.choice(previous)
    others = rng.sample([name for name in earlier if name != first], wanted - 1)
    return sorted([first, *others])


def _model_sql(parents: list[str], rows: int, salt: int) -> str:
    if parents:
        counts = "\n    union all ".join(f"select count(*) as n from {{{{ ref('{p}') }}}}" for p in parents)
        upstream = f"with upstream as (\n    {counts}\n)\n"
        total = "(select sum(n) from upstream)"
    else:
        upstream, total = "", "0"
    return (
        f"{upstream}select r.range as id, (r.range * 31 + {total} + {salt}) % 1000003 as v\nfrom range({rows}) as r\n"
    )


def _view_sql(parents: list[str], rows: int, salt: int) -> str:
    declared = "".join(f"-- depends_on: {{{{ ref('{p}') }}}}\n" for p in parents)
    return f"{declared}select r.range as id, (r.range * 31 + {salt}) % 1000003 as v\nfrom range({rows}) as r\n"


def _schema_yml(names: list[str]) -> str:
    entries = "".join(
        f"  - name: {name}\n    columns:\n      - name: id\n        data_tests:\n          - not_null\n"
        for name in names
    )
    return f"version: 2\n\nmodels:\n{entries}"


def _project_yml(materialized: str) -> str:
    return textwrap.dedent(
        f"""\
        name: {PROJECT_NAME}
        version: "1.0"
        config-version: 2
        profile: {PROJECT_NAME}
        model-paths: ["models"]
        seed-paths: ["seeds"]
        flags:
          send_anonymous_usage_stats: false
        models:
          {PROJECT_NAME}:
            +materialized: {materialized}
        """
    )
