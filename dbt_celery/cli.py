"""The ``dbt-celery`` command: ``run`` a project through Celery, ``retry`` what failed, show a run's
``status``, ``cancel`` it, write its ``artifacts`` or its ``report``."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from celery import Celery
from rich.console import Console

from dbt_celery.core.spec import RunSpec
from dbt_celery.errors import ConfigurationError, DbtCeleryError

if TYPE_CHECKING:
    from dbt_celery.celery.embedded import EmbeddedWorkers
    from dbt_celery.core.summary import RunStatus
    from dbt_celery.run import DbtRun

EXIT_OK = 0
EXIT_NODES_FAILED = 1
EXIT_USAGE = 2
EXIT_RUNNING = 3  # `status` of a run that has not ended yet; `run` that gave up waiting
EXIT_INTERRUPTED = 130
#: Seconds a cancelled run gets to stop dbt and end its nodes before the CLI stops waiting.
CANCEL_GRACE = 30.0
#: Seconds a run may stay queued before the CLI asks whether any worker is listening.
QUEUED_HINT_AFTER = 30.0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dbt-celery`` console script."""
    args = _parser().parse_args(argv)
    console = Console(stderr=True)
    signal.signal(signal.SIGTERM, _interrupt)  # a terminated CLI cancels its run like Ctrl-C
    try:
        return args.handler(args, console)
    except DbtCeleryError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return EXIT_INTERRUPTED


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbt-celery", description="Run dbt projects on Celery.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="build a dbt project through Celery")
    _add_build_flags(run)
    run.add_argument("--no-wait", action="store_true", help="print the run id and exit")
    run.set_defaults(handler=_run)

    conformance = commands.add_parser(
        "conformance", help="build with plain dbt and with dbt-celery; list every node where they disagree"
    )
    _add_build_flags(conformance)
    conformance.add_argument("--reference-target", help="target of the plain dbt build (default: --target)")
    conformance.set_defaults(handler=_conformance, retries=0)

    retry = commands.add_parser(
        "retry", help="rebuild exactly the failed and not-run nodes of an ended run, in one new run"
    )
    retry.add_argument("run_id")
    retry.add_argument("--no-wait", action="store_true", help="print the new run's id and exit")
    _add_common(retry)
    retry.set_defaults(handler=_retry)

    artifacts = commands.add_parser(
        "artifacts", help="write a run's combined run_results.json and manifest.json (what dbt retry --state reads)"
    )
    artifacts.add_argument("run_id")
    artifacts.add_argument("--out", "-o", required=True, help="the folder to write them into")
    _add_common(artifacts)
    artifacts.set_defaults(handler=_write_artifacts)

    status = commands.add_parser("status", help="show a run started elsewhere (exit 3 while it runs)")
    status.add_argument("run_id")
    _add_common(status)
    status.set_defaults(handler=_status)

    cancel = commands.add_parser("cancel", help="stop a run: dbt is interrupted, unfinished nodes end cancelled")
    cancel.add_argument("run_id")
    _add_common(cancel)
    cancel.set_defaults(handler=_cancel)

    report = commands.add_parser("report", help="draw a run's timeline as one self-contained HTML file (and a PNG)")
    report.add_argument("run_id")
    report.add_argument("--out", "-o", help="the HTML file to write (default: dbt-celery-report-RUN_ID.html)")
    report.add_argument("--png", help="also draw the timeline into this PNG file (needs matplotlib)")
    report.add_argument("--app", "-A", help="your Celery app, module:attribute (default: dbt-celery's own)")
    report.set_defaults(handler=_render_report)
    return parser


def _add_build_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("project_dir", help="the dbt project folder")
    parser.add_argument("--select", "-s", nargs="+", default=[], help="dbt --select")
    parser.add_argument("--exclude", nargs="+", default=[], help="dbt --exclude")
    parser.add_argument("--selector", help="a YAML selector of the project")
    parser.add_argument("--vars", help='dbt vars as JSON or YAML, e.g. \'{"day": "2026-01-01"}\'')
    parser.add_argument("--full-refresh", action="store_true")
    parser.add_argument("--empty", action="store_true", help="dbt --empty: refs and sources read as zero rows")
    parser.add_argument("--state", help="folder of an earlier run's manifest.json, for state: and result: selection")
    parser.add_argument("--defer", action="store_true", help="dbt --defer: unselected refs resolve to --state")
    parser.add_argument("--favor-state", action="store_true", help="dbt --favor-state (with --defer)")
    parser.add_argument("--indirect-selection", choices=["eager", "cautious", "buildable", "empty"])
    parser.add_argument(
        "--source-freshness", action="store_true", help="check source freshness first; skip what reads a stale source"
    )
    parser.add_argument("--target", "-t")
    parser.add_argument("--profiles-dir", help="folder with profiles.yml (default: the project's, else dbt's)")
    parser.add_argument("--profile-json", help="a built-in profile mapping as JSON instead of profiles.yml")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--retries", type=int, default=1, help="real retries per node (each builds it inline)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds before waiting nodes give up")
    parser.add_argument("--invocation", choices=["in_process", "subprocess"], default="in_process")
    _add_common(parser)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--app", "-A", help="your Celery app, module:attribute (default: dbt-celery's own)")


def _run(args: argparse.Namespace, console: Console) -> int:
    spec = _spec_from_args(args)
    spec.check_project()
    return _start(_app(args), spec, args, console)


def _retry(args: argparse.Namespace, console: Console) -> int:
    from dbt_celery.run import retry_spec_of

    app = _app(args)
    spec = retry_spec_of(args.run_id, app=app)
    if spec is None:
        console.print(f"run {args.run_id}: every node passed; nothing to retry")
        return EXIT_OK
    console.print(f"retrying {len(spec.select)} node(s) of run {args.run_id}")
    return _start(app, spec, args, console)


def _write_artifacts(args: argparse.Namespace, console: Console) -> int:
    from dbt_celery.run import DbtRun

    run = DbtRun.restore(args.run_id, app=_app(args))
    if not run.status().done:
        console.print(f"[yellow]run {run.id} has not ended: the artifacts show it as it is now[/]")
    for path in run.artifacts().write(args.out):
        console.print(f"wrote {path}")
    return EXIT_OK


def _start(app: Celery, spec: RunSpec, args: argparse.Namespace, console: Console) -> int:
    """Submit ``spec`` and follow it (on embedded workers started here when there is no broker)."""
    from dbt_celery.celery.config import is_embedded, state_dir

    if not is_embedded(app):
        return _submit_and_follow(app, spec, args, console, workers=None)
    from dbt_celery.celery.embedded import EmbeddedWorkers

    if args.no_wait:
        raise ConfigurationError(
            "--no-wait needs a broker (CELERY_BROKER_URL): the embedded workers live only as long as this command"
        )
    with EmbeddedWorkers(state_dir()) as workers:
        return _submit_and_follow(workers.app, spec, args, console, workers=workers)


def _submit_and_follow(
    app: Celery, spec: RunSpec, args: argparse.Namespace, console: Console, workers: EmbeddedWorkers | None
) -> int:
    from dbt_celery.progress import LiveProgress
    from dbt_celery.run import submit

    run = submit(spec, app=app)
    if args.no_wait:
        print(run.id)
        return EXIT_OK
    console.print(f"run [bold]{run.id}[/] submitted")

    submitted_at = time.monotonic()
    hinted = False

    def on_update(status: RunStatus) -> None:
        nonlocal hinted
        if workers is not None:
            workers.check()
        if display is not None:
            display.update(status)
        if status.state == "queued" and not hinted and time.monotonic() - submitted_at > QUEUED_HINT_AFTER:
            hinted = True
            _hint_workers(console, app, args.app or "dbt_celery", workers.log_dir if workers is not None else None)

    display = None if args.json or not console.is_terminal else LiveProgress(console)
    try:
        with display if display is not None else contextlib.nullcontext():
            status = run.wait(spec.timeout + 180, on_update=on_update)
    except TimeoutError as exc:
        console.print(f"[bold red]timed out:[/] {exc}")
        return EXIT_RUNNING
    except KeyboardInterrupt:
        return _cancel_and_report(run, args, console)
    if workers is not None:
        from dbt_celery.celery.workers import IDLE_SHUTDOWN_GRACE

        workers.shutdown_grace = IDLE_SHUTDOWN_GRACE  # the run is over: nothing in them is needed
    return _report(status, args, console)


def _hint_workers(console: Console, app: Celery, app_name: str, local_logs: Path | None) -> None:
    """Say that no worker took the run's producer, and name the command that starts one."""
    from dbt_celery.celery.queues import Queues, worker_commands

    queue = Queues.of(app).producer or app.conf.task_default_queue
    waited = f"still queued after {QUEUED_HINT_AFTER:.0f} s: no worker has taken it from queue {queue}"
    console.print(f"[yellow]{waited}[/]", soft_wrap=True)
    if local_logs is not None:
        console.print(f"the local workers' logs are in {local_logs}", soft_wrap=True)
        return
    plain, *split = worker_commands(app, app_name)
    console.print("Start a worker for every queue, in this environment:", soft_wrap=True)
    console.print(f"    {plain}", markup=False, highlight=False, soft_wrap=True)
    if split:
        console.print("or split, as in production (dbt builds, then light tasks):", soft_wrap=True)
        for command in split:
            console.print(f"    {command}", markup=False, highlight=False, soft_wrap=True)


def _cancel_and_report(run: DbtRun, args: argparse.Namespace, console: Console) -> int:
    """Ctrl-C or SIGTERM while following a run: cancel it and wait (briefly) for it to stop."""
    console.print(f"[yellow]interrupted: cancelling run {run.id} ...[/]")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave workers behind
    run.cancel("interrupted from the command line")
    try:
        status = run.wait(CANCEL_GRACE)
    except TimeoutError:
        console.print(f"[yellow]run {run.id} is still stopping; see `dbt-celery status {run.id}`[/]")
        return EXIT_INTERRUPTED
    _report(status, args, console)
    return EXIT_INTERRUPTED


def _conformance(args: argparse.Namespace, console: Console) -> int:
    import dataclasses

    from dbt_celery.celery.config import is_embedded
    from dbt_celery.conformance import compare
    from dbt_celery.progress import differences_table

    candidate = _spec_from_args(args)
    candidate.check_project()
    if candidate.source_freshness:
        raise ConfigurationError(
            "conformance compares with a plain dbt build, which checks no source freshness: leave out "
            "--source-freshness (tests/e2e/test_slim_runs.py compares it with dbt build --exclude source:STALE+)"
        )
    reference = dataclasses.replace(candidate, target=args.reference_target or candidate.target)
    app = _app(args)
    console.print("building with plain dbt, then with dbt-celery ...")
    report = compare(reference, candidate, app=None if is_embedded(app) else app, timeout=candidate.timeout)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        Console().print(differences_table(report))
    return EXIT_OK if report.ok else EXIT_NODES_FAILED


def _status(args: argparse.Namespace, console: Console) -> int:
    from dbt_celery.run import DbtRun

    status = DbtRun.restore(args.run_id, app=_app(args)).status()
    return _report(status, args, console)


def _cancel(args: argparse.Namespace, console: Console) -> int:
    from dbt_celery.run import DbtRun

    run = DbtRun.restore(args.run_id, app=_app(args))
    first = run.cancel("cancelled from the command line")
    console.print(f"run {run.id}: {'cancel requested' if first else 'already cancelled'}")
    return EXIT_OK


def _render_report(args: argparse.Namespace, console: Console) -> int:
    from dbt_celery.report import read_timeline, require_matplotlib, write_html, write_png
    from dbt_celery.run import DbtRun

    if args.png:
        require_matplotlib()  # before reading anything: a missing extra is one line, not a half-done report
    run = DbtRun.restore(args.run_id, app=_app(args))
    status = run.status()
    timeline = read_timeline(run.store, run.id, status)
    written = [write_html(timeline, args.out or f"dbt-celery-report-{run.id}.html")]
    if args.png:
        written.append(write_png(timeline, args.png))
    if not status.done:
        console.print(f"[yellow]run {run.id} is still {status.state}: the report shows it as it is now[/]")
    for path in written:
        console.print(f"wrote {path}")
    return EXIT_OK


def _report(status: RunStatus, args: argparse.Namespace, console: Console) -> int:
    from dbt_celery.progress import failure_lines, result_table

    if status.bad_input and not status.nodes and not args.json:
        console.print(f"[bold red]error:[/] {status.error}")
        return EXIT_USAGE
    if args.json:
        print(json.dumps(status.to_dict(), indent=2, sort_keys=True))
    else:
        out = Console()
        out.print(result_table(status))
        out.print(failure_lines(status))
    if not status.done:
        return EXIT_RUNNING
    if status.bad_input:
        return EXIT_USAGE
    return EXIT_OK if status.state == "success" else EXIT_NODES_FAILED


def _spec_from_args(args: argparse.Namespace) -> RunSpec:
    project = Path(args.project_dir)
    profiles_dir = args.profiles_dir
    if profiles_dir is None and args.profile_json is None and (project / "profiles.yml").is_file():
        profiles_dir = str(project)
    profile = None
    if args.profile_json:
        try:
            profile = json.loads(args.profile_json)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"--profile-json is not valid JSON: {exc}") from None
    options = {"timeout": args.timeout} if args.timeout is not None else {}
    spec = RunSpec(
        project_dir=str(project),
        profiles_dir=profiles_dir,
        profile=profile,
        target=args.target,
        threads=args.threads,
        select=args.select,
        exclude=args.exclude,
        selector=args.selector,
        vars=args.vars,
        full_refresh=args.full_refresh,
        empty=args.empty,
        state=args.state,
        defer=args.defer,
        favor_state=args.favor_state,
        indirect_selection=args.indirect_selection,
        source_freshness=args.source_freshness,
        invocation=args.invocation,
        retries=args.retries,
        **options,
    )
    return spec.resolved()


def _app(args: argparse.Namespace) -> Celery:
    if not args.app:
        import dbt_celery

        return dbt_celery.app
    from celery.utils.imports import symbol_by_name

    try:
        app = symbol_by_name(args.app)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigurationError(f"cannot load the Celery app {args.app!r}: {exc}") from None
    if not isinstance(app, Celery):
        raise ConfigurationError(f"{args.app!r} is a {type(app).__name__}, not a Celery app")
    return app


if __name__ == "__main__":
    sys.exit(main())
