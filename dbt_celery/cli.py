"""The ``dbt-celery`` command: ``run`` a project through Celery, or show a run's ``status``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from celery import Celery
from rich.console import Console

from dbt_celery.errors import ConfigurationError, DbtCeleryError
from dbt_celery.spec import RunSpec

if TYPE_CHECKING:
    from dbt_celery.run import RunStatus
    from dbt_celery.workers import LocalWorkers

EXIT_OK = 0
EXIT_NODES_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
#: Seconds a run may stay queued before the CLI asks whether any worker is listening.
QUEUED_HINT_AFTER = 30.0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dbt-celery`` console script."""
    args = _parser().parse_args(argv)
    console = Console(stderr=True)
    try:
        return args.handler(args, console)
    except DbtCeleryError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130


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

    status = commands.add_parser("status", help="show a run started elsewhere")
    status.add_argument("run_id")
    _add_common(status)
    status.set_defaults(handler=_status)
    return parser


def _add_build_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("project_dir", help="the dbt project folder")
    parser.add_argument("--select", "-s", nargs="+", default=[], help="dbt --select")
    parser.add_argument("--exclude", nargs="+", default=[], help="dbt --exclude")
    parser.add_argument("--selector", help="a YAML selector of the project")
    parser.add_argument("--vars", help="dbt vars as JSON or YAML, e.g. '{\"day\": \"2026-01-01\"}'")
    parser.add_argument("--full-refresh", action="store_true")
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
    app = _app(args)
    from dbt_celery.config import is_embedded, state_dir

    if not is_embedded(app):
        return _submit_and_follow(app, spec, args, console, workers=None)
    from dbt_celery.embedded import EmbeddedWorkers

    if args.no_wait:
        raise ConfigurationError("--no-wait needs a broker (CELERY_BROKER_URL): the embedded workers live only as long as this command")
    with EmbeddedWorkers(state_dir()) as workers:
        return _submit_and_follow(workers.app, spec, args, console, workers=workers)


def _submit_and_follow(
    app: Celery, spec: RunSpec, args: argparse.Namespace, console: Console, workers: LocalWorkers | None
) -> int:
    from dbt_celery.config import Queues
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
            queue = Queues.of(app).producer or app.conf.task_default_queue
            console.print(f"[yellow]still queued after {QUEUED_HINT_AFTER:.0f} s: is a worker consuming queue {queue}?[/]")

    display = None if args.json or not console.is_terminal else LiveProgress(console)
    try:
        if display is not None:
            with display:
                status = run.wait(spec.timeout + 60, on_update=on_update)
        else:
            status = run.wait(spec.timeout + 60, on_update=on_update)
    except TimeoutError as exc:
        console.print(f"[bold red]timed out:[/] {exc}")
        return EXIT_TIMEOUT
    return _report(status, args, console)


def _conformance(args: argparse.Namespace, console: Console) -> int:
    import dataclasses

    from dbt_celery.config import is_embedded
    from dbt_celery.conformance import compare
    from dbt_celery.progress import differences_table

    candidate = _spec_from_args(args)
    candidate.check_project()
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


def _report(status: RunStatus, args: argparse.Namespace, console: Console) -> int:
    from dbt_celery.progress import failure_lines, result_table

    if args.json:
        print(json.dumps(status.to_dict(), indent=2, sort_keys=True))
    else:
        out = Console()
        out.print(result_table(status))
        out.print(failure_lines(status))
    if not status.done:
        return EXIT_NODES_FAILED
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
    options = {"timeout": args.timeout} if args.timeout else {}
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
        invocation=args.invocation,
        retries=args.retries,
        **options,
    )
    return spec.resolved()


def _app(args: argparse.Namespace) -> Celery:
    if args.app:
        from celery.utils.imports import symbol_by_name

        return symbol_by_name(args.app)
    import dbt_celery

    return dbt_celery.app


if __name__ == "__main__":
    sys.exit(main())
