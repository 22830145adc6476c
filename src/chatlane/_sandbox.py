"""The sandbox behind the ``code_interpreter`` tool: model-written Python in a separate process.

Code never runs in the caller's process. Each run starts a fresh interpreter
(``python -I -X utf8``) in a temporary directory that is removed afterwards, with:

- an empty environment (no variable of the caller's is passed on, so no API key);
- a wall-clock time limit (the whole process group is killed when it runs out), backed by a
  CPU-time limit;
- an address-space limit (``RLIMIT_AS``) and a limit on the size of files it writes, set as
  hard limits inside the child before the code runs, so the code cannot raise them again
  (unless it runs as root outside a user namespace);
- stdout and stderr written to files (so a runaway ``print`` loop cannot fill the caller's
  memory) and cut to ``max_output`` characters; the value of a final expression is
  captured as its ``repr``, as in a notebook.

Where unprivileged Linux namespaces are available (``unshare``), the child also runs in its
own user, PID and network namespaces: it sees no other process in ``/proc`` (not even the
caller's environment through ``/proc/<pid>/environ``), has no network, and everything it starts
dies with it (even in a new session). Without them the limits above still hold, but the code
can read other processes' ``/proc`` entries of the same user, and a process it starts in a new
session outlives the time limit; run chatlane in a container for hostile code. Neither way
limits how many files the code writes in its temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from chatlane.errors import InputError, ToolError

__all__ = ["Sandbox", "SandboxResult"]

# Runs inside the child: sets the limits, then runs main.py like a notebook cell.
_RUNNER = r"""
import _ast, resource, sys

def _limit(kind, value):
    if value > 0:
        soft, hard = resource.getrlimit(kind)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(kind, (value, value))

memory, file_size, cpu = (int(a) for a in sys.argv[1:4])
out = open("result.json", "w", encoding="utf-8")
_limit(resource.RLIMIT_AS, memory)
_limit(resource.RLIMIT_FSIZE, file_size)
_limit(resource.RLIMIT_CPU, cpu)
report = {"result": None, "error": None}
try:
    with open("main.py", encoding="utf-8") as f:
        source = f.read()
    # _ast and the PyCF_ONLY_AST flag (0x400) parse as ast.parse does, without the cost of
    # importing the ast module into every run.
    tree = compile(source, "<code>", "exec", 0x400)
    last = None
    if tree.body and isinstance(tree.body[-1], _ast.Expr):
        last = _ast.Expression(tree.body.pop().value)
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    exec(compile(tree, "<code>", "exec"), namespace)
    if last is not None:
        value = eval(compile(last, "<code>", "eval"), namespace)
        if value is not None:
            report["result"] = repr(value)[:100000]
except BaseException as e:
    import traceback

    frames = traceback.extract_tb(e.__traceback__)
    frames = [f for f in frames if f.filename == "<code>"]
    lines = traceback.format_list(frames) + traceback.format_exception_only(type(e), e)
    sys.stderr.write("Traceback (most recent call last):\n" + "".join(lines))
    report["error"] = "".join(traceback.format_exception_only(type(e), e)).strip()[:2000]
for stream in (sys.stdout, sys.stderr):
    try:
        stream.flush()
    except BaseException:
        pass
if report["error"] and "Errno 27" in report["error"]:
    report["error"] = "the code wrote more output than the sandbox allows"
import json

out.write(json.dumps(report))
out.close()
"""

_UNSHARE_FLAGS = (
    "--user",
    "--map-root-user",
    "--net",
    "--pid",
    "--fork",
    "--mount-proc",
    "--kill-child",
)


@functools.cache
def _unshare_command() -> tuple[str, ...] | None:
    """The ``unshare`` prefix when unprivileged namespaces work here, else None."""
    if not sys.platform.startswith("linux"):
        return None
    path = shutil.which("unshare")
    if path is None:
        return None
    command = (path, *_UNSHARE_FLAGS)
    try:
        probe = subprocess.run(
            [*command, "true"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={"PATH": os.defpath},
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return command if probe.returncode == 0 else None


def isolation_available() -> bool:
    """Whether the sandbox can run code in its own namespaces (no other process, no network)."""
    return _unshare_command() is not None


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """What one run of code in the sandbox produced."""

    stdout: str
    stderr: str
    result: str | None = None
    """The ``repr`` of the code's final expression, when it has one and it is not None."""
    error: str | None = None
    """Why the code failed: its exception, the time limit, or a signal that killed it."""
    exit_code: int | None = None
    timed_out: bool = False
    duration: float = 0.0
    truncated: bool = False
    """Whether stdout or stderr was cut to the sandbox's ``max_output``."""

    @property
    def ok(self) -> bool:
        """Whether the code ran to its end without an error."""
        return self.error is None

    def to_text(self) -> str:
        """The run as the tool message the model reads."""
        parts: list[str] = []
        if self.stdout:
            parts.append(f"[stdout]\n{self.stdout.rstrip()}\n[/stdout]")
        if self.stderr:
            parts.append(f"[stderr]\n{self.stderr.rstrip()}\n[/stderr]")
        if self.result is not None:
            parts.append(f"[result]\n{self.result}\n[/result]")
        if self.error is not None:
            parts.append(f"[error]\n{self.error}\n[/error]")
        if self.truncated:
            parts.append("(output was cut at the sandbox's limit)")
        return "\n".join(parts) if parts else "[no output]"


@dataclass(frozen=True, slots=True)
class Sandbox:
    """Settings for running model-written Python (see the module docstring).

    Pass one as ``code_interpreter=Sandbox(...)`` to `chatlane.agent.run` (or ``True`` for the
    defaults) to let the model run code; nothing runs otherwise.
    """

    timeout: float = 10.0
    """Seconds of wall-clock time before the process is killed."""
    memory_mb: int = 512
    """The address-space limit of the process, in MiB."""
    max_output: int = 20_000
    """Characters of stdout and of stderr kept (each)."""
    isolate: bool | None = None
    """Run in separate namespaces: None uses them where available, True requires them."""
    python: str = field(default_factory=lambda: sys.executable)
    """The interpreter that runs the code."""

    def __post_init__(self) -> None:
        if not (isinstance(self.timeout, int | float) and self.timeout > 0):
            raise InputError(f"the sandbox timeout must be a positive number, got {self.timeout!r}")
        if not (isinstance(self.memory_mb, int) and self.memory_mb >= 64):
            raise InputError(f"the sandbox memory_mb must be at least 64, got {self.memory_mb!r}")
        if not (isinstance(self.max_output, int) and self.max_output > 0):
            raise InputError(f"max_output must be a positive int, got {self.max_output!r}")

    def _command(self) -> list[str]:
        prefix: tuple[str, ...] = ()
        if self.isolate is not False:
            unshare = _unshare_command()
            if unshare is None and self.isolate:
                raise ToolError(
                    "the sandbox was asked to isolate the code, but unprivileged namespaces "
                    "('unshare --user --net --pid') are not available here"
                )
            prefix = unshare or ()
        limits = (
            str(self.memory_mb * 1024 * 1024),
            str(max(1 << 20, self.max_output * 8)),
            str(math.ceil(self.timeout) + 1),
        )
        return [*prefix, self.python, "-I", "-X", "utf8", "-c", _RUNNER, *limits]

    @staticmethod
    def _environment(workdir: str) -> dict[str, str]:
        # Deliberately nothing of os.environ: the caller's secrets stay in the caller.
        return {"PATH": os.defpath, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}

    def run(self, code: str) -> SandboxResult:
        """Run ``code`` in a new process and return what it printed and produced."""
        if not isinstance(code, str):
            raise InputError(f"code must be a str, got {type(code).__name__}")
        command = self._command()
        with tempfile.TemporaryDirectory(prefix="chatlane-sandbox-") as workdir:
            _write_code(workdir, code)
            started = time.monotonic()
            with _outputs(workdir) as (out, err):
                try:
                    process = subprocess.Popen(
                        command,
                        cwd=workdir,
                        env=self._environment(workdir),
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                        start_new_session=True,
                    )
                except OSError as e:
                    raise ToolError(f"cannot start the sandbox interpreter: {e}") from e
                # A timer kills the group at the limit while this thread blocks in wait():
                # Popen.wait(timeout) would poll, adding up to 50 ms to every run.
                fired = threading.Event()

                def stop() -> None:
                    fired.set()
                    _kill_group(process.pid)

                timer = threading.Timer(self.timeout, stop)
                timer.daemon = True
                timer.start()
                try:
                    process.wait()
                finally:
                    timer.cancel()
                    _kill_group(process.pid)
                    process.wait()
                timed_out = fired.is_set()
            return self._collect(workdir, process.returncode, timed_out, started)

    async def arun(self, code: str) -> SandboxResult:
        """The async twin of `run`: waits for the process without blocking the event loop."""
        if not isinstance(code, str):
            raise InputError(f"code must be a str, got {type(code).__name__}")
        command = self._command()
        with tempfile.TemporaryDirectory(prefix="chatlane-sandbox-") as workdir:
            _write_code(workdir, code)
            started = time.monotonic()
            with _outputs(workdir) as (out, err):
                try:
                    process = await asyncio.create_subprocess_exec(
                        *command,
                        cwd=workdir,
                        env=self._environment(workdir),
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                        start_new_session=True,
                    )
                except OSError as e:
                    raise ToolError(f"cannot start the sandbox interpreter: {e}") from e
                timed_out = False
                try:
                    await asyncio.wait_for(process.wait(), self.timeout)
                except TimeoutError:
                    timed_out = True
                finally:
                    # Also on cancellation: the code must not outlive the run that started it.
                    _kill_group(process.pid)
                    await process.wait()
            return self._collect(workdir, process.returncode, timed_out, started)

    def _collect(
        self, workdir: str, returncode: int | None, timed_out: bool, started: float
    ) -> SandboxResult:
        duration = time.monotonic() - started
        stdout, cut_out = _read_output(os.path.join(workdir, "stdout"), self.max_output)
        stderr, cut_err = _read_output(os.path.join(workdir, "stderr"), self.max_output)
        report: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            with open(os.path.join(workdir, "result.json"), encoding="utf-8") as f:
                loaded = json.load(f)
            if isinstance(loaded, dict):
                report = loaded
        error = report.get("error")
        if timed_out:
            error = f"the code was stopped after the time limit of {self.timeout:g} s"
        elif returncode is not None and returncode < 0:
            error = _signal_error(-returncode, self)
        elif returncode and error is None:
            error = f"the interpreter exited with status {returncode}"
        elif not report and error is None:
            error = "the code ended the interpreter before it reported its result"
        result = report.get("result")
        return SandboxResult(
            stdout=stdout,
            stderr=stderr,
            result=result if isinstance(result, str) else None,
            error=error if isinstance(error, str) else None,
            exit_code=returncode,
            timed_out=timed_out,
            duration=duration,
            truncated=cut_out or cut_err,
        )


def _write_code(workdir: str, code: str) -> None:
    with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8") as f:
        f.write(code)


@contextlib.contextmanager
def _outputs(workdir: str) -> Any:
    with (
        open(os.path.join(workdir, "stdout"), "wb") as out,
        open(os.path.join(workdir, "stderr"), "wb") as err,
    ):
        yield out, err


def _kill_group(pid: int) -> None:
    # The child leads its own session (start_new_session), so its group holds everything it
    # started; killing the group leaves nothing behind.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _read_output(path: str, limit: int) -> tuple[str, bool]:
    try:
        with open(path, "rb") as f:
            data = f.read(limit * 4 + 4)
    except OSError:
        return "", False
    text = data.decode("utf-8", errors="replace")
    if len(text) > limit:
        return text[:limit], True
    return text, False


def _signal_error(number: int, sandbox: Sandbox) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    if number == getattr(signal, "SIGXCPU", None):
        return f"the code used more than its CPU time limit ({name})"
    if number == getattr(signal, "SIGXFSZ", None):
        return f"the code wrote more output than the sandbox allows ({name})"
    return f"the code was killed by {name} (memory limit {sandbox.memory_mb} MiB)"
