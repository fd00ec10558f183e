"""The project profiles the harness measures, and which parts one invocation runs.

* ``light``: small tables (2,000 rows), one ``not_null`` test each: dbt's own per-node
  overhead dominates, so this is where dbt-celery's overhead shows (R1 target at 200 and
  1,000 models).
* ``heavy``: tables of 100,000 rows (the harness's historical default), where the
  warehouse work dominates; the naive baseline (R2) is timed here.
* ``views``: trivial views plus their tests, the cheapest node dbt builds, at the size
  where planning and per-node bookkeeping add up: 2,500 views (5,002 nodes) by default,
  ``--views 1000`` for 2,002 nodes. (Views with tests build faster here than twice as
  many views without: a test on a 10-row view costs less than a view's create-and-rename.)
  A plain ``dbt build`` grows faster than the node count, so this one case takes a good
  part of the full run (docs/benchmarks.md has its times).
* ``embedded``: ``dbt-celery run examples/jaffle_shop`` on the embedded default against
  plain ``dbt build`` of the same project, command line against command line.
"""

from __future__ import annotations

import dataclasses

from benchmarks.generate import DEFAULT_ROWS, Shape

#: Model counts from which on two repetitions (A/B pairs) are measured: a plain build takes a minute there.
LARGE = 500
#: Model counts from which on one repetition is measured: a plain build takes several minutes there.
HUGE = 2_000
#: Every part ``--only`` accepts, in the order they run.
PARTS = ("light", "heavy", "views", "embedded")


@dataclasses.dataclass(frozen=True)
class Profile:
    """One kind of generated project: its per-model cost, sizes and the extras measured on it."""

    name: str
    description: str
    sizes: tuple[int, ...]  # model counts of the full run
    quick_sizes: tuple[int, ...]  # model counts of --quick
    rows: int
    materialized: str = "table"
    tests: bool = True
    naive: bool = False  # time the naive one-process-per-node baseline (R2)
    alone: tuple[int, ...] = ()  # sizes that also get the "consumers paused" diagnostic run

    def shape(self, models: int, seeds: int) -> Shape:
        """The generator's shape for ``models`` models of this profile."""
        return Shape(models, seeds=seeds, rows=self.rows, materialized=self.materialized, tests=self.tests)


PROFILES: dict[str, Profile] = {
    "light": Profile(
        "light",
        "small tables (2,000 rows), one not_null test each: the overhead case",
        sizes=(200, 1_000),
        quick_sizes=(20, 100),
        rows=2_000,
        alone=(200, 1_000),
    ),
    "heavy": Profile(
        "heavy",
        f"tables of {DEFAULT_ROWS:,} rows, one not_null test each",
        sizes=(50, 200),
        quick_sizes=(20,),
        rows=DEFAULT_ROWS,
        naive=True,
        alone=(200,),
    ),
    "views": Profile(
        "views",
        "trivial views (10 rows, parents declared with `-- depends_on`), one not_null test each",
        sizes=(2_500,),
        quick_sizes=(150,),
        rows=10,
        materialized="view",
    ),
}


def parse_parts(text: str) -> tuple[str, ...]:
    """The parts named in ``--only`` (comma-separated), in run order; ValueError for an unknown one."""
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(wanted) - set(PARTS))
    if unknown or not wanted:
        raise ValueError(f"--only takes a comma-separated subset of {','.join(PARTS)}, not {text!r}")
    return tuple(part for part in PARTS if part in wanted)


def parse_sizes(text: str) -> tuple[int, ...]:
    """Model counts from a comma-separated list; ValueError unless all are positive integers."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"sizes must be integers separated by commas, not {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise ValueError(f"sizes need at least one positive model count, not {text!r}")
    return sizes


def case_key(profile: str, models: int) -> str:
    """The key of one measured case in the results (``light/200``)."""
    return f"{profile}/{models}"
