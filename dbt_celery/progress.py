"""What the CLI shows: a live progress display while a run goes, and a final table."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from dbt_celery.conformance import ConformanceReport
from dbt_celery.core.records import NodeState
from dbt_celery.core.summary import NodeStatus, RunStatus

STATUS_STYLES = {
    NodeState.SUCCESS: "green",
    NodeState.SKIPPED: "yellow",
    NodeState.FAILED: "bold red",
    NodeState.UPSTREAM_FAILED: "red",
    NodeState.NOT_RUN: "magenta",
    NodeState.ERROR: "bold magenta",
    NodeState.CANCELLED: "yellow",
    NodeState.REPORTED: "cyan",
    NodeState.PENDING: "dim",
}
#: States counted as "failed" in the live display.
_FAILED = (NodeState.FAILED, NodeState.UPSTREAM_FAILED, NodeState.NOT_RUN, NodeState.ERROR, NodeState.CANCELLED)


class LiveProgress:
    """A rich live display fed with successive :class:`RunStatus` snapshots."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.progress.add_task("planning", total=None, counts="")
        self.live = Live(self.progress, console=console, refresh_per_second=8, transient=True)

    def __enter__(self) -> LiveProgress:
        self.live.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.live.__exit__(kind, value, trace)

    def update(self, status: RunStatus) -> None:
        """Show one snapshot of the run."""
        total = len(status.nodes) or None
        done = sum(1 for node in status.nodes.values() if node.done)
        counts = (
            f"[green]{status.count('success')} ok[/] "
            f"[red]{status.count(*_FAILED)} failed[/] "
            f"[cyan]{status.count('reported')} reported[/] "
            f"[dim]{status.count('pending')} waiting[/]"
        )
        self.progress.update(self.task, description=status.state, total=total, completed=done, counts=counts)


def result_table(status: RunStatus) -> Table:
    """The final per-node table of a run."""
    table = Table(title=f"dbt-celery run {status.run_id}: {status.state}", title_style="bold")
    # Every column folds rather than cuts: a long test name wraps onto more lines, never ends in "…".
    for column in ("node", "type", "status", "dbt status", "by", "rows", "seconds"):
        right = column in ("rows", "seconds")
        table.add_column(column, justify="right" if right else "left", overflow="fold", no_wrap=False)
    for node in sorted(status.nodes.values(), key=_order):
        seconds = f"{node.execution_time:.2f}" if node.execution_time is not None else ""
        table.add_row(
            node.name,
            node.resource_type,
            Text(node.status.value, style=STATUS_STYLES.get(node.status, "")),
            node.dbt_status or "",
            node.resolved_by or "",
            f"{node.rows_affected:,}" if node.rows_affected is not None else "",
            seconds,
        )
    return table


def failure_lines(status: RunStatus) -> Group:
    """One line per failed node with dbt's message, and the run's own error."""
    lines = []
    if status.error:
        lines.append(Text(f"error: {status.error}", style="bold red"))
    for node in sorted(status.nodes.values(), key=_order):
        if node.status in (NodeState.FAILED, NodeState.NOT_RUN, NodeState.ERROR) and node.message:
            lines.append(Text(f"{node.name}: {node.message.strip()}", style="red"))
    return Group(*lines)


def _order(node: NodeStatus) -> tuple[str, str]:
    return (node.finished_at or "~", node.name)


def differences_table(report: ConformanceReport) -> Table:
    """The nodes where dbt-celery and plain dbt build disagree (empty when they agree)."""
    nodes = len(set(report.reference) | set(report.candidate))
    verdict = "[green]no differences[/]" if report.ok else f"[red]{len(report.differences)} difference(s)[/]"
    table = Table(title=f"conformance over {nodes} nodes: {verdict}", title_style="bold")
    for column in ("node", "plain dbt build", "dbt-celery", "detail"):
        table.add_column(column)
    for difference in report.differences:
        table.add_row(difference.unique_id, difference.reference or "-", difference.candidate or "-", difference.detail)
    return table
