"""Where the CPU goes: py-spy sampling of the workers (and of a plain dbt build), summarised by package.

``py-spy record --format raw`` writes collapsed stacks (``root;...;leaf count``), one
line per distinct stack, with idle threads left out, so a sample is a thread doing work
(running Python, or inside a C call such as DuckDB's or a socket read). The summary says,
per process, which packages hold the leaf frames (self time), which packages appear
anywhere in the stack (inclusive), and under which of dbt-celery's own functions (the
innermost one on the stack) the time is spent. py-spy is optional (``pip install py-spy``): without it the harness says so.
"""

from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable

#: Samples per second per thread.
RATE = 100
#: Seconds py-spy may take to write its file once asked to stop.
STOP_TIMEOUT = 30.0
#: What the "on the stack" shares leave out: on nearly every stack, so they say nothing.
#: The packages of the Celery stack, for the samples without a dbt-celery frame.
MACHINERY = frozenset({"celery", "kombu", "billiard", "amqp", "vine"})
#: The innermost-frame share of the samples with no dbt-celery frame at all.
OUTSIDE = "(no dbt-celery frame)"
NOT_PACKAGES = frozenset({"stdlib", "import", "script", "?"})
#: The dbt function one of its threads runs a node under (``GraphRunnableTask.call_runner``).
NODE_RUN = "call_runner"
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    """The py-spy executable beside this interpreter, else on PATH, else None."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.is_file() else shutil.which("py-spy")


class Sampler:
    """``py-spy record`` attached to one running process for a ``with`` block (stopped with SIGINT)."""

    def __init__(self, pid: int, out: Path, rate: int = RATE) -> None:
        self.pid, self.out, self.rate = pid, out, rate
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Sampler:
        executable = py_spy()
        if executable is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        command = [executable, "record", "--pid", str(self.pid), "--rate", str(self.rate)]
        command += ["--format", "raw", "--nonblocking", "--full-filenames", "-o", str(self.out)]
        self.log = self.out.with_suffix(".log")
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def summary(self) -> dict[str, Any]:
        """The summary of what was sampled (:func:`summarize_collapsed`), or the error py-spy printed."""
        if not self.out.is_file():
            return {"error": self.log.read_text(errors="replace")[-500:] if self.log.is_file() else "no output"}
        return summarize_collapsed(self.out.read_text(errors="replace").splitlines())


def record_command(command: list[str], out: Path, rate: int = RATE) -> list[str]:
    """``command`` wrapped in ``py-spy record`` (for a plain dbt build), or ValueError without py-spy."""
    executable = py_spy()
    if executable is None:
        raise ValueError("py-spy is not installed")
    options = ["--rate", str(rate), "--format", "raw", "--nonblocking", "--full-filenames", "-o", str(out)]
    return [executable, "record", *options, "--", *command]


def parse_frame(frame: str) -> tuple[str, str]:
    """A raw frame ``function (file:line)`` as (function, file)."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip(), ""
    return match["function"], match["file"]


def package_of(file: str) -> str:
    """What a source file belongs to: ``celery``, ``dbt.adapters``, ``dbt_celery.core.store``, ``stdlib.json``..."""
    path = file.replace("\\", "/")
    if "dbt_celery/" in path:
        module = path.rsplit("dbt_celery/", 1)[1].removesuffix(".py").replace("/", ".")
        return "dbt_celery." + module.removesuffix(".__init__")
    if "site-packages/" in path:
        parts = path.rsplit("site-packages/", 1)[1].split("/")
        top = parts[0].removesuffix(".py")
        if top == "dbt" and len(parts) > 2:
            return f"dbt.{parts[1]}"
        return top
    if path.startswith("<frozen"):
        return "import"
    if path == "<template>":
        return "jinja-template"  # dbt's compiled Jinja templates
    if path == "<string>":
        return "codegen"  # code generated at run time (mashumaro's serialisers, dataclass methods)
    if "benchmarks/" in path:
        return "benchmarks"
    match = re.search(r"/lib/python3\.\d+/([^/]+)", path)
    if match:
        return "stdlib." + match[1].removesuffix(".py")
    if "/bin/" in path:
        return "script"  # a console script (the dbt command's entry point)
    return path or "?"


def summarize_collapsed(lines: Iterable[str], top: int = 12) -> dict[str, Any]:
    """Shares of the samples by package (self and inclusive), by innermost dbt-celery frame, and in dbt's node threads.

    The innermost dbt-celery frame of a sample says which of dbt-celery's operations the
    time was spent under (a store read, a message sent, dbt's build), whatever ran below it;
    for the samples without one, the innermost frame of the Celery stack says which part of
    the worker's own machinery ran (event sending, acks, the result backend).
    """
    total = 0
    self_packages: collections.Counter[str] = collections.Counter()
    inclusive_packages: collections.Counter[str] = collections.Counter()
    self_functions: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    machinery: collections.Counter[str] = collections.Counter()
    node_threads: collections.Counter[str] = collections.Counter()  # leaf functions under dbt's node runs
    for line in lines:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [parse_frame(frame) for frame in stack.split(";")]
        total += count
        function, file = frames[-1]
        leaf = package_of(file)
        self_packages[leaf] += count
        self_functions[f"{function} ({leaf})"] += count
        for name in {package_of(file).split(".")[0] for _, file in frames} - NOT_PACKAGES:
            inclusive_packages[name] += count
        mine = [f"{package_of(file)}.{function}" for function, file in frames if "dbt_celery/" in file]
        ours[mine[-1] if mine else OUTSIDE] += count
        if not mine:
            celery = [f"{function} ({package_of(file)})" for function, file in frames if _is_machinery(file)]
            machinery[celery[-1] if celery else "(none of them)"] += count
        if any(function.endswith(NODE_RUN) and "dbt/task/" in file for function, file in frames):
            node_threads[f"{function} ({leaf})"] += count

    def shares(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, count / total) for name, count in counter.most_common(top)] if total else []

    return {
        "samples": total,
        "self_packages": shares(self_packages),
        "inclusive_packages": shares(inclusive_packages),
        "self_functions": shares(self_functions),
        "dbt_celery_innermost": shares(ours),
        "machinery_innermost": shares(machinery),
        # Samples are per thread at one rate, so two processes' counts compare as thread-seconds.
        "dbt_node_thread_samples": node_threads.total(),
        "dbt_node_thread_functions": [
            (name, count / node_threads.total()) for name, count in node_threads.most_common(top)
        ],
    }


def _is_machinery(file: str) -> bool:
    """Whether a frame belongs to the Celery stack (celery, kombu, billiard, amqp, vine)."""
    return package_of(file).split(".")[0] in MACHINERY
