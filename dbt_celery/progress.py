"""What the CLI shows: a live progress display while a run goes, and a final table."""

from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from dbt_celery.conformance import ConformanceReport
from dbt_celery.run import NodeStatus, RunStatus

STATUS_STYLES = {
    "success": "green",
    "skipped": "yellow",
    "failed": "bold red",
    "upstream_failed": "red",
    "not_run": "magenta",
    "reported": "cyan",
    "pending": "dim",
}


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

    def __enter__(self) -> "LiveProgress":
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(*exc)

    def update(self, status: RunStatus) -> None:
        """Show one snapshot of the run."""
        total = len(status.nodes) or None
        done = sum(1 for node in status.nodes.values() if node.done)
        counts = (
            f"[green]{status.count('success')} ok[/] "
            f"[red]{status.count('failed', 'upstream_failed', 'not_run')} failed[/] "
            f"[cyan]{status.count('reported')} reported[/] "
            f"[dim]{status.count('pending')} waiting[/]"
        )
        self.progress.update(self.task, description=status.state, total=total, completed=done, counts=counts)


def result_table(status: RunStatus) -> Table:
    """The final per-node table of a run."""
    table = Table(title=f"dbt-celery run {status.run_id}: {status.state}", title_style="bold")
    for column in ("node", "type", "status", "dbt status", "by", "seconds"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for node in sorted(status.nodes.values(), key=_order):
        seconds = f"{node.execution_time:.2f}" if node.execution_time is not None else ""
        table.add_row(
            node.name,
            node.resource_type,
            Text(node.status, style=STATUS_STYLES.get(node.status, "")),
            node.dbt_status or "",
            node.resolved_by or "",
            seconds,
        )
    return table


def failure_lines(status: RunStatus) -> Group:
    """One line per failed node with dbt's message, and the run's own error."""
    lines = []
    if status.error:
        lines.append(Text(f"error: {status.error}", style="bold red"))
    for node in sorted(status.nodes.values(), key=_order):
        if node.status in ("failed", "not_run") and node.message:
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
