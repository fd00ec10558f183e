"""Run one dbt command and stream a :class:`NodeEvent` for every node as dbt finishes it.

Two modes give the same stream:

* ``in_process``: ``dbtRunner`` with a callback, in a helper thread. The callback only
  filters and enqueues, so it never blocks dbt's threads, and whatever it raises is
  kept and re-raised after dbt returns (dbt would otherwise swallow it into a node).
* ``subprocess``: ``dbt <command> --log-format json --log-level debug`` read line by line.

dbt also reports ephemeral models (``NodeFinished``, success) though it builds nothing
for them and leaves them out of ``run_results.json``; callers keep the nodes they planned.

dbt keeps flags, adapters and its event manager per process, so in-process
invocations are serialised with a process-wide lock. This is the only module of
dbt-celery that imports dbt.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from dbt_celery.core.records import NodeEvent, not_run_event
from dbt_celery.dbt.events import STREAM_EVENTS, NodeEventParser, event_from_run_result
from dbt_celery.errors import DbtInvocationError

log = logging.getLogger(__name__)

#: Seconds a stopped dbt subprocess gets before it is killed.
STOP_GRACE = 20.0

_IN_PROCESS_LOCK = threading.Lock()
#: Most node events written to the store in one round trip.
BATCH_MAX = 500
_DONE = object()


class DbtInvocation:
    """One dbt command. Iterate it to receive node events while dbt runs.

    After iteration, :attr:`success` holds dbt's own verdict and :attr:`error` the
    reason dbt could not run at all (``None`` when it ran, even with failed nodes).
    """

    def __init__(
        self,
        args: list[str],
        *,
        mode: str = "in_process",
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        manifest: Any = None,
    ) -> None:
        self.args = list(args)
        self.mode = mode
        self.cwd = str(cwd) if cwd else None
        self.env = dict(env) if env else None
        self.manifest = manifest
        self.parser = NodeEventParser()
        self.success: bool | None = None
        self.error: str | None = None
        self.result: Any = None
        self._process: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._stop_requested = False

    def __iter__(self) -> Iterator[NodeEvent]:
        for batch in self.batches():
            yield from batch

    def batches(self) -> Iterator[list[NodeEvent]]:
        """Run dbt and yield its node events in batches: whatever arrived since the last batch."""
        if self.mode == "subprocess":
            return ([event] for event in self._run_subprocess())
        return self._run_in_process()

    def run(self) -> list[NodeEvent]:
        """Run to completion and return every node event."""
        return list(self)

    # -- in-process ------------------------------------------------------------------
    def _run_in_process(self) -> Iterator[list[NodeEvent]]:
        from dbt.cli.main import dbtRunner
        from dbt_common.events.functions import msg_to_dict

        events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        callback_errors: list[BaseException] = []

        def on_event(event: Any) -> None:
            # On dbt's own threads: a filter and a queue put, nothing more.
            try:
                if event.info.name in STREAM_EVENTS:
                    events.put(event)
            except BaseException as exc:  # noqa: BLE001 - dbt would turn it into a node error
                callback_errors.append(exc)

        def parsed(event: Any) -> list[NodeEvent]:
            node_event = self.parser.feed(event.info.name, msg_to_dict(event).get("data", {}))
            return [node_event] if node_event is not None else []

        def invoke() -> None:
            try:
                runner = dbtRunner(manifest=self.manifest, callbacks=[on_event])
                self.result = runner.invoke(self.args)
            except BaseException as exc:  # noqa: BLE001 - reported below
                self.result = exc
            finally:
                events.put(_DONE)

        with _IN_PROCESS_LOCK, _working_directory(self.cwd), _environment(self.env):
            self._thread = thread = threading.Thread(target=invoke, name="dbt-invocation", daemon=True)
            thread.start()
            if self._stop_requested:
                self._interrupt()
            try:
                finished = False
                while not finished:
                    # Whatever dbt said since the last batch (at least one item; _DONE comes last).
                    items = [events.get()]
                    while len(items) < BATCH_MAX and not events.empty():
                        items.append(events.get())
                    finished = items[-1] is _DONE
                    batch = [event for item in items if item is not _DONE for event in parsed(item)]
                    if batch:
                        yield batch
            finally:
                # A caller that stops reading early (an error in its loop) must not let
                # go of the lock, directory or environment while dbt still runs.
                if thread.is_alive() and sys.exc_info()[0] is not None:
                    self.stop()
                thread.join()
                release_connections()

        if callback_errors:
            raise DbtInvocationError(f"dbt event callback failed: {callback_errors[0]!r}") from callback_errors[0]
        if isinstance(self.result, BaseException):
            self.success, self.error = False, f"dbt raised {self.result!r}"
            return
        self.success = bool(self.result.success)
        if self.result.exception is not None:
            self.error = str(self.result.exception)

    # -- subprocess ------------------------------------------------------------------
    def _run_subprocess(self) -> Iterator[NodeEvent]:
        # dbt's own flags go after the command's words ("build", "source freshness").
        words = next((i for i, arg in enumerate(self.args) if arg.startswith("-")), len(self.args))
        command = [dbt_executable(), *self.args[:words], "--log-format", "json", "--log-level", "debug"]
        command += self.args[words:]
        env = {**os.environ, **(self.env or {})}
        errors: list[str] = []
        self._process = process = subprocess.Popen(
            command, cwd=self.cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        if self._stop_requested:
            self._interrupt()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                parsed = _parse_log_line(line)
                if parsed is None:
                    continue
                name, level, data, message = parsed
                if level == "error" and message:
                    errors.append(message)
                if name in STREAM_EVENTS:
                    event = self.parser.feed(name, data)
                    if event is not None:
                        yield event
            returncode = process.wait()
        except BaseException:
            self.stop()
            _wait_or_kill(process, STOP_GRACE)
            raise
        self.success = returncode == 0
        if returncode not in (0, 1):
            detail = "; ".join(errors[-3:]) or "no error message"
            self.error = f"dbt exited with code {returncode}: {detail}"

    def stop(self) -> None:
        """Ask dbt to stop as Ctrl-C would: it finishes the nodes in flight and starts no other.

        In-process, a KeyboardInterrupt is raised once in dbt's invocation thread (dbt then
        cancels its open connections); a subprocess gets SIGINT, and SIGTERM if it still
        runs ``STOP_GRACE`` seconds later. Asking again changes nothing; asking before dbt
        started stops it as soon as it starts.
        """
        if not self._stop_requested:
            self._stop_requested = True
            self._interrupt()

    def _interrupt(self) -> None:
        thread, process = self._thread, self._process
        if thread is not None and thread.is_alive() and thread.ident is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(thread.ident), ctypes.py_object(KeyboardInterrupt)
            )
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            escalate = threading.Timer(STOP_GRACE, _terminate_if_running, (process,))
            escalate.daemon = True
            escalate.start()


def _terminate_if_running(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()


def _wait_or_kill(process: subprocess.Popen[str], grace: float) -> None:
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _parse_log_line(line: str) -> tuple[str, str, dict[str, Any], str] | None:
    """Return (event name, level, data, message) of a JSON log line; None for anything else."""
    if not line.startswith("{"):
        if line.strip():
            log.debug("dbt: %s", line.rstrip())
        return None
    # Most lines are SQL debug chatter: decode only lines that can matter.
    if '"level": "error"' not in line and not any(f'"name": "{name}"' in line for name in STREAM_EVENTS):
        return None
    try:
        record = json.loads(line)
        info = record["info"]
        return info["name"], info.get("level", ""), record.get("data") or {}, info.get("msg", "")
    except (ValueError, KeyError, TypeError):
        return None


def preload() -> None:
    """Import dbt now (a producer worker at start-up), so the first build starts warm."""
    import dbt.cli.main  # noqa: F401


def dbt_executable() -> str:
    """Return the ``dbt`` command installed beside this Python, else the one on PATH."""
    beside = Path(sys.executable).with_name("dbt")
    if beside.exists():
        return str(beside)
    found = shutil.which("dbt")
    if found is None:
        raise DbtInvocationError("the dbt command was not found; install dbt-core in this environment")
    return found


def release_connections() -> None:
    """Close every adapter connection this process holds (DuckDB keeps files locked otherwise)."""
    from dbt.adapters.factory import cleanup_connections

    cleanup_connections()
    duckdb_connections = sys.modules.get("dbt.adapters.duckdb.connections")
    if duckdb_connections is not None:
        duckdb_connections.DuckDBConnectionManager.close_all_connections()


def events_for_unreported(
    selected: Iterable[str], reported: Iterable[str], run_results_path: Path, reason: str
) -> list[NodeEvent]:
    """Return a final event for every selected node that dbt's stream never reported.

    dbt writes some nodes only to ``run_results.json`` (``--fail-fast`` skips, a failed
    ``on-run-start`` hook); those take their status from there. Nodes found nowhere
    are marked ``not_run`` with ``reason``, so no consumer waits for them.
    """
    missing = set(selected) - set(reported)
    if not missing:
        return []
    results = {}
    with contextlib.suppress(OSError, ValueError):
        for result in json.loads(run_results_path.read_text()).get("results", []):
            results[result["unique_id"]] = result
    events = []
    for unique_id in sorted(missing):
        if unique_id in results:
            # A node dbt skipped without telling the stream was cut off by a failure
            # elsewhere (fail-fast, a failed hook): a retry can still build it.
            events.append(event_from_run_result(results[unique_id], upstream_failed=True))
        else:
            events.append(not_run_event(unique_id, reason))
    return events


@contextlib.contextmanager
def dbt_exclusively(directory: str | None) -> Iterator[None]:
    """Hold this process's dbt (its flags are global) in ``directory``, as an in-process invocation does."""
    with _IN_PROCESS_LOCK, _working_directory(directory):
        yield


@contextlib.contextmanager
def _working_directory(path: str | None) -> Iterator[None]:
    if path is None:
        yield
        return
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def _environment(extra: Mapping[str, str] | None) -> Iterator[None]:
    if not extra:
        yield
        return
    saved = {key: os.environ.get(key) for key in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
