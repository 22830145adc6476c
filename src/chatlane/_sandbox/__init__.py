"""The sandbox behind the ``code_interpreter`` tool: model-written Python kept off the host.

Each run starts a fresh interpreter (``python -I -X utf8``) through a small launcher
(``_launcher.py``) in one of two modes, chosen by the caller and never switched silently:

``isolation="namespaces"`` (the default)
    The code runs in its own user, mount, pid, network, IPC and UTS namespaces, as nobody
    with no capabilities and ``NO_NEW_PRIVS``. Its root is a fresh tmpfs holding read-only
    binds of the system directories, the interpreter and the allowed site-packages, a few
    device nodes, a new ``/proc`` that shows only its own processes, and one writable working
    directory ``/work`` (a size-limited tmpfs, also ``/tmp``). No home, no ``/root`` beyond
    the interpreter's own directory, no checkout, no caller's cwd, no network. When the run
    ends or times out, the namespace's init exits and the kernel kills every process left.
    Where the host cannot build this, ``Sandbox()`` raises `SandboxUnavailable` naming what
    is missing.

``isolation="limits-only"`` (only when asked for)
    The same limits without the namespaces: the code can read what the user running it can
    read and can reach the network. When chatlane runs as root the code runs as nobody. Every
    process it started is killed at the end (the launcher is a child subreaper, so a new
    session and a double fork do not escape it).

In both modes: an empty environment (no variable of the caller's, so no API key), a
wall-clock time limit, hard limits on CPU time, address space, file size and process count
(set before the interpreter starts, so the code cannot raise them), stdout and stderr
written to files and cut to ``max_output`` characters, and the value of a final expression
captured as its ``repr``, as in a notebook. Named input files are copied into the working
directory before the code runs and named output files copied back after it (see
docs/sandbox.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import marshal
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from chatlane.errors import InputError, SandboxUnavailable, ToolError

__all__ = ["Isolation", "Sandbox", "SandboxResult", "SandboxUnavailable", "isolation_problem"]

Isolation = Literal["namespaces", "limits-only"]
ISOLATIONS: tuple[Isolation, ...] = ("namespaces", "limits-only")

_HERE = os.path.dirname(os.path.abspath(__file__))
# Imported as top-level modules from this directory (not through chatlane, which the launcher
# never imports): their cached bytecode is used, where running the file would compile it.
_LAUNCH = f"import sys; sys.path.insert(0, {_HERE!r}); import _launcher; _launcher.main()"
_NOBODY = 65534
# Seconds the launcher gets beyond the time limit to clean up before the caller kills it.
_GRACE = 5.0

_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC = {
    "passwd": "nobody:x:65534:65534:nobody:/work:/usr/sbin/nologin\n",
    "group": "nogroup:x:65534:\n",
    "hosts": "127.0.0.1 localhost\n",
}


@dataclass(frozen=True, slots=True)
class _Layout:
    """What the namespaces mode shows the code of the host, worked out once per interpreter."""

    python: str
    binds: tuple[str, ...]
    symlinks: tuple[tuple[str, str], ...]
    etc_links: tuple[tuple[str, str], ...]
    site_dirs: tuple[str, ...]
    workdir: str
    """The code's working directory inside: /work, unless the host has a bind there."""


def _covered(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


@functools.cache
def _layout(python: str, site_packages: tuple[str, ...] | None) -> _Layout:
    real = os.path.realpath(python)
    binds: list[str] = []
    symlinks: list[tuple[str, str]] = []
    for directory in _SYSTEM_DIRS:
        if os.path.islink(directory):
            symlinks.append((directory, os.readlink(directory)))
        elif os.path.isdir(directory):
            binds.append(directory)
    if real == os.path.realpath(sys.executable):
        # The interpreter as the caller runs it: a virtual environment stays one (its
        # pyvenv.cfg and site-packages, read-only), so the code imports what the caller can.
        python = sys.executable
        prefixes = [sys.base_prefix, sys.base_exec_prefix, sys.prefix]
    else:
        prefixes = [os.path.dirname(os.path.dirname(real))]
        here = os.path.dirname(os.path.dirname(os.path.abspath(python)))
        if os.path.isfile(os.path.join(here, "pyvenv.cfg")):
            prefixes.append(here)
    site_dirs = [os.path.realpath(d) for d in site_packages or () if os.path.isdir(d)]
    if site_packages is not None:
        # Only the directories asked for: the interpreter runs without its own.
        prefixes = [p for p in prefixes if not os.path.isfile(os.path.join(p, "pyvenv.cfg"))]
    for path in [*(os.path.realpath(p) for p in prefixes), os.path.dirname(real), *site_dirs]:
        if not _covered(path, binds):
            binds = [b for b in binds if not _covered(b, [path])]
            binds.append(path)
    for name in ("ld.so.cache",):
        path = os.path.join("/etc", name)
        if os.path.isfile(path):
            binds.append(path)
    etc_links = []
    if os.path.islink("/etc/localtime"):
        etc_links.append(("localtime", os.readlink("/etc/localtime")))
    if site_packages is not None:
        python = real
    workdir = next(
        w
        for w in ("/work", "/sandbox", "/chatlane-sandbox")
        if not any(_covered(b, [w]) for b in binds)
    )
    return _Layout(
        python, tuple(binds), tuple(symlinks), tuple(etc_links), tuple(site_dirs), workdir
    )


def _site_packages() -> list[str]:
    import site

    return [d for d in site.getsitepackages() if d]


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
    isolation: Isolation = "namespaces"
    """Which isolation the code ran under."""
    files: Mapping[str, bytes] = field(default_factory=dict)
    """The named output files the code left in its working directory, by name."""
    missing_files: Mapping[str, str] = field(default_factory=dict)
    """Named output files that did not come back, with why (missing, not a regular file)."""

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
        if self.files or self.missing_files:
            lines = [f"{name} ({len(data)} bytes)" for name, data in self.files.items()]
            lines += [f"{name}: {why}" for name, why in self.missing_files.items()]
            parts.append("[files]\n" + "\n".join(lines) + "\n[/files]")
        if self.truncated:
            parts.append("(output was cut at the sandbox's limit)")
        return "\n".join(parts) if parts else "[no output]"


def _check_name(name: object, what: str) -> str:
    if not (
        isinstance(name, str)
        and name
        and name not in (".", "..")
        and "/" not in name
        and "\0" not in name
        and len(name.encode()) <= 255
    ):
        raise InputError(
            f"{what} must be a plain file name (no '/', not '.' or '..'), got {name!r}"
        )
    return name


def _input_files(
    files: Mapping[str, str | os.PathLike[str] | bytes] | Iterable[str | os.PathLike[str]],
) -> tuple[tuple[str, str | bytes], ...]:
    """``{name: path or bytes}`` or a list of paths (named by their base name), checked."""
    if isinstance(files, str | bytes | os.PathLike):
        raise InputError("files must be a mapping of names to paths, or a list of paths")
    pairs: list[tuple[str, str | bytes]] = []
    if isinstance(files, Mapping):
        items: Iterable[tuple[Any, Any]] = files.items()
    else:
        items = ((os.path.basename(os.fspath(p)), p) for p in files)
    for name, source in items:
        _check_name(name, "an input file's name")
        if isinstance(source, bytes):
            pairs.append((name, source))
        elif isinstance(source, str | os.PathLike):
            path = os.fspath(source)
            if not os.path.isfile(path):
                raise InputError(f"the input file {name!r} ({path}) is not a readable file")
            pairs.append((name, path))
        else:
            raise InputError(f"the input file {name!r} must be a path or bytes")
    if len({n for n, _ in pairs}) != len(pairs):
        raise InputError("two input files have the same name")
    return tuple(pairs)


@dataclass(frozen=True, slots=True)
class Sandbox:
    """Settings for running model-written Python (see the module docstring).

    Pass one as ``code_interpreter=Sandbox(...)`` to `chatlane.agent.run` (or ``True`` for the
    defaults) to let the model run code; nothing runs otherwise. ``Sandbox()`` raises
    `SandboxUnavailable` where the host cannot isolate the code; ``isolation="limits-only"``
    runs it with limits alone, and only when asked for.
    """

    timeout: float = 10.0
    """Seconds of wall-clock time before every process of the run is killed."""
    memory_mb: int = 512
    """The address-space limit of each process, in MiB."""
    max_output: int = 20_000
    """Characters of stdout and of stderr kept (each)."""
    isolation: Isolation = "namespaces"
    """``"namespaces"`` (the default) or ``"limits-only"`` (see the module docstring)."""
    max_processes: int = 32
    """How many processes and threads the code may have at once (RLIMIT_NPROC)."""
    disk_mb: int = 64
    """The size of the working directory (a tmpfs when isolated), and of any one file."""
    files: Any = ()
    """Input files copied into the working directory before each run: ``{name: path or
    bytes}``, or a list of paths (named by their base name)."""
    outputs: tuple[str, ...] = ()
    """Names of files copied back out of the working directory after each run."""
    site_packages: tuple[str, ...] | None = None
    """Site-packages directories the code may import from (read-only); None: those of the
    running interpreter, ``()``: the standard library only."""
    python: str = field(default_factory=lambda: sys.executable)
    """The interpreter that runs the code."""

    def __post_init__(self) -> None:
        if not (isinstance(self.timeout, int | float) and self.timeout > 0):
            raise InputError(f"the sandbox timeout must be a positive number, got {self.timeout!r}")
        if not (isinstance(self.memory_mb, int) and self.memory_mb >= 64):
            raise InputError(f"the sandbox memory_mb must be at least 64, got {self.memory_mb!r}")
        if not (isinstance(self.max_output, int) and self.max_output > 0):
            raise InputError(f"max_output must be a positive int, got {self.max_output!r}")
        if not (isinstance(self.max_processes, int) and self.max_processes >= 1):
            raise InputError(f"max_processes must be at least 1, got {self.max_processes!r}")
        if not (isinstance(self.disk_mb, int) and self.disk_mb >= 1):
            raise InputError(f"disk_mb must be at least 1, got {self.disk_mb!r}")
        if self.isolation not in ISOLATIONS:
            raise InputError(
                f"isolation must be 'namespaces' or 'limits-only', got {self.isolation!r}"
            )
        object.__setattr__(self, "files", _input_files(self.files))
        outputs = (self.outputs,) if isinstance(self.outputs, str) else tuple(self.outputs)
        object.__setattr__(self, "outputs", tuple(_check_name(n, "an output") for n in outputs))
        if self.site_packages is not None:
            object.__setattr__(self, "site_packages", tuple(map(str, self.site_packages)))
        if self.isolation == "namespaces":
            problem = isolation_problem(self.python, self.site_packages)
            if problem is not None:
                raise SandboxUnavailable(
                    f"the sandbox cannot isolate code on this host: {problem}. Pass "
                    "isolation='limits-only' to run it with time, memory and process limits "
                    "only (it can then read what this user can read and reach the network)"
                )

    def run(
        self,
        code: str,
        *,
        files: Mapping[str, str | os.PathLike[str] | bytes] | Iterable[str] | None = None,
        outputs: Iterable[str] | None = None,
    ) -> SandboxResult:
        """Run ``code`` and return what it printed and produced.

        ``files`` and ``outputs`` add to the sandbox's own for this run.
        """
        with self._prepared(code, files, outputs) as job:
            started = time.monotonic()
            with job.streams() as fds:
                try:
                    process = subprocess.Popen(
                        job.command,
                        env={"PATH": os.defpath},
                        stdin=fds[0],
                        stdout=fds[1],
                        stderr=fds[2],
                        pass_fds=fds[3],
                        start_new_session=True,
                        close_fds=True,
                    )
                except OSError as e:
                    raise ToolError(f"cannot start the sandbox: {e}") from e
            # The launcher keeps the time; this timer only stops a launcher that hangs.
            # (Popen.wait(timeout) would poll, adding up to 50 ms to every run.)
            timer = threading.Timer(self.timeout + _GRACE, _kill_group, (process.pid,))
            timer.daemon = True
            timer.start()
            try:
                process.wait()
            except BaseException:
                _stop(process.pid)
                process.wait()
                raise
            finally:
                timer.cancel()
            result: SandboxResult = job.collect(process.returncode, started)
            return result

    async def arun(
        self,
        code: str,
        *,
        files: Mapping[str, str | os.PathLike[str] | bytes] | Iterable[str] | None = None,
        outputs: Iterable[str] | None = None,
    ) -> SandboxResult:
        """The async twin of `run`: waits for the process without blocking the event loop."""
        with self._prepared(code, files, outputs) as job:
            started = time.monotonic()
            with job.streams() as fds:
                try:
                    process = await asyncio.create_subprocess_exec(
                        *job.command,
                        env={"PATH": os.defpath},
                        stdin=fds[0],
                        stdout=fds[1],
                        stderr=fds[2],
                        pass_fds=fds[3],
                        start_new_session=True,
                        close_fds=True,
                    )
                except OSError as e:
                    raise ToolError(f"cannot start the sandbox: {e}") from e
            try:
                await asyncio.wait_for(process.wait(), self.timeout + _GRACE)
            except BaseException:
                # Also on cancellation: the code must not outlive the run that started it.
                # SIGTERM asks the launcher to kill every process of the run and exit.
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.shield(asyncio.wait_for(process.wait(), 1.0))
                except BaseException:
                    _kill_group(process.pid)
                raise
            result: SandboxResult = job.collect(process.returncode, started)
            return result

    @contextlib.contextmanager
    def _prepared(
        self,
        code: str,
        files: Mapping[str, str | os.PathLike[str] | bytes] | Iterable[str] | None,
        outputs: Iterable[str] | None,
    ) -> Any:
        if not isinstance(code, str):
            raise InputError(f"code must be a str, got {type(code).__name__}")
        inputs = self.files if files is None else (*self.files, *_input_files(files))
        if len({n for n, _ in inputs}) != len(inputs):
            raise InputError("two input files have the same name")
        wanted = list(self.outputs)
        for name in [] if outputs is None else ([outputs] if isinstance(outputs, str) else outputs):
            if _check_name(name, "an output") not in wanted:
                wanted.append(name)
        staging = tempfile.mkdtemp(prefix="chatlane-sandbox-")
        try:
            job = _Job(self, staging, code, inputs, tuple(wanted))
            yield job
        finally:
            shutil.rmtree(staging, ignore_errors=True)


class _Job:
    """One run's staging directory on the host, its launcher command and its collection."""

    def __init__(
        self,
        sandbox: Sandbox,
        staging: str,
        code: str,
        inputs: tuple[tuple[str, str | bytes], ...],
        outputs: tuple[str, ...],
    ) -> None:
        self.sandbox = sandbox
        self.staging = staging
        self.outputs = outputs
        isolated = sandbox.isolation == "namespaces"
        root = os.geteuid() == 0
        # Isolated, the launcher copies inputs from in/ to the tmpfs and outputs to out/;
        # limits-only, work/ is the working directory itself.
        self.inbox = os.path.join(staging, "in" if isolated else "work")
        for name in ("in", "out", "root") if isolated else ("work",):
            os.mkdir(os.path.join(staging, name), 0o700)
        with open(os.path.join(staging, "code.py"), "w", encoding="utf-8") as f:
            f.write(code)
        for name, source in inputs:
            target = os.path.join(self.inbox, name)
            if isinstance(source, bytes):
                with open(target, "wb") as f:
                    f.write(source)
            else:
                try:
                    shutil.copyfile(source, target)
                except OSError as e:
                    raise InputError(f"cannot copy the input file {name!r}: {e}") from e
        # As root the launcher (isolated) or the code (limits-only) is nobody: hand it the
        # staging directory. Where nobody is no id at all (a user namespace mapping only
        # root), limits-only runs the code as root without capabilities instead.
        self.nobody = root
        if root:
            try:
                for directory, _, names in os.walk(staging):
                    os.chown(directory, _NOBODY, _NOBODY)
                    for name in names:
                        os.chown(os.path.join(directory, name), _NOBODY, _NOBODY)
            except OSError as e:
                if isolated:
                    raise ToolError(f"cannot hand the sandbox its directory: {e}") from e
                self.nobody = False
        self.config = self._config(isolated)
        self.command = [
            sandbox.python,
            "-I",
            "-S",
            "-X",
            "utf8",
            "-c",
            _LAUNCH,
            "",  # the config, once the fds are known (streams)
        ]

    def _config(self, isolated: bool) -> dict[str, Any]:
        sandbox = self.sandbox
        disk = sandbox.disk_mb * 1024 * 1024
        config: dict[str, Any] = {
            "mode": sandbox.isolation,
            "staging": self.staging,
            "timeout": sandbox.timeout,
            "memory": sandbox.memory_mb * 1024 * 1024,
            "file_size": disk,
            "cpu": int(sandbox.timeout) + 2,
            "processes": sandbox.max_processes,
            "disk": disk,
            "inodes": 4096,
            "outputs": list(self.outputs),
            "own_site": sandbox.site_packages is None,
        }
        if isolated:
            layout = _layout(sandbox.python, sandbox.site_packages)
            config |= {
                "python": layout.python,
                "binds": list(layout.binds),
                "symlinks": [list(s) for s in layout.symlinks],
                "etc": _ETC,
                "etc_links": dict(layout.etc_links),
                "site_dirs": list(layout.site_dirs),
                "workdir": layout.workdir,
                "env": {
                    "PATH": "/usr/local/bin:/usr/bin:/bin",
                    "HOME": layout.workdir,
                    "TMPDIR": layout.workdir,
                    "LANG": "C.UTF-8",
                },
            }
        else:
            work = os.path.join(self.staging, "work")
            # Deliberately nothing of os.environ: the caller's secrets stay in the caller.
            env = {"PATH": os.defpath, "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8"}
            config |= {
                "python": sandbox.python,
                "site_dirs": list(sandbox.site_packages or ()),
                "workdir": work,
                "env": env,
                "nobody": self.nobody,
                "read_all": not _readable_by_others(sandbox.python),
            }
        return config

    @contextlib.contextmanager
    def streams(self) -> Any:
        """The launcher's files: the code (stdin), stdout, stderr, and the two reports (the
        runner's and the launcher's), whose fd numbers go into the command for the launcher
        to move to 3 and 4 in its own process."""
        path = functools.partial(os.path.join, self.staging)
        with contextlib.ExitStack() as stack:
            code = stack.enter_context(open(path("code.py"), "rb"))
            out = stack.enter_context(open(path("stdout"), "wb"))
            err = stack.enter_context(open(path("stderr"), "wb"))
            report = stack.enter_context(open(path("report"), "wb"))
            status = stack.enter_context(open(path("status"), "wb"))
            fds = (report.fileno(), status.fileno())
            self.command[-1] = marshal.dumps({**self.config, "fds": fds}).hex()
            yield code, out, err, fds

    def collect(self, returncode: int | None, started: float) -> SandboxResult:
        sandbox = self.sandbox
        duration = time.monotonic() - started
        path = functools.partial(os.path.join, self.staging)
        stdout, cut_out = _read_output(path("stdout"), sandbox.max_output)
        stderr, cut_err = _read_output(path("stderr"), sandbox.max_output)
        report = _read_report(path("report"))
        status = _read_status(path("status"))
        if "failure" in status:
            raise ToolError(f"the sandbox could not be set up: {status['failure']}")
        if not status:
            raise ToolError(
                f"the sandbox launcher ended without a report (status {returncode}): "
                + stderr.strip()[-500:]
            )
        code = status.get("status")
        exit_code = code if isinstance(code, int) else None
        timed_out = bool(status.get("timed_out"))
        error = report.get("error")
        if timed_out:
            error = f"the code was stopped after the time limit of {sandbox.timeout:g} s"
        elif exit_code is not None and exit_code < 0:
            error = _signal_error(-exit_code, sandbox)
        elif exit_code and error is None:
            error = f"the interpreter exited with status {exit_code}"
        elif not report and error is None:
            error = "the code ended the interpreter before it reported its result"
        files, missing = self._outputs(status)
        result = report.get("result")
        return SandboxResult(
            stdout=stdout,
            stderr=stderr,
            result=result if isinstance(result, str) else None,
            error=error if isinstance(error, str) else None,
            exit_code=exit_code,
            timed_out=timed_out,
            duration=duration,
            truncated=cut_out or cut_err,
            isolation=sandbox.isolation,
            files=files,
            missing_files=missing,
        )

    def _outputs(self, status: dict[str, Any]) -> tuple[dict[str, bytes], dict[str, str]]:
        files: dict[str, bytes] = {}
        missing: dict[str, str] = {}
        isolated = self.sandbox.isolation == "namespaces"
        problems = status.get("outputs") or {}
        limit = self.sandbox.disk_mb * 1024 * 1024
        for name in self.outputs:
            if isolated and name in problems:
                missing[name] = str(problems[name])
                continue
            where = os.path.join(self.staging, "out" if isolated else "work", name)
            try:
                data = _read_regular(where, limit)
            except FileNotFoundError:
                missing[name] = "missing"
            except OSError:
                missing[name] = "not a regular file"
            else:
                if data is None:
                    missing[name] = "too large"
                else:
                    files[name] = data
        return files, missing


@functools.cache
def _readable_by_others(python: str) -> bool:
    """Whether a user other than the caller can run ``python`` and read its library."""
    paths = {os.path.realpath(python), sys.base_prefix, sys.prefix}
    for path in paths:
        while True:
            try:
                mode = os.stat(path).st_mode
            except OSError:
                return False
            if not mode & (stat.S_IXOTH if stat.S_ISDIR(mode) else stat.S_IROTH):
                return False
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
    return True


def _read_regular(path: str, limit: int) -> bytes | None:
    # O_NOFOLLOW and the regular-file check: never a link or a FIFO the code left there.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError(path)
        data = f.read(limit + 1)
    return None if len(data) > limit else data


def _read_report(path: str) -> dict[str, Any]:
    """The runner's report: a literal the code could have overwritten, so read with care."""
    import ast

    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(300_000)
        loaded = ast.literal_eval(text)
    except Exception:  # whatever the code left there, it is no report
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _read_status(path: str) -> dict[str, Any]:
    """The launcher's report (the code cannot reach its fd)."""
    try:
        with open(path, "rb") as f:
            loaded = marshal.load(f)
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _stop(pid: int) -> None:
    """Stop a run early: the launcher kills every process of the run and exits (SIGTERM);
    a launcher that does not is killed with its group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.01)
    _kill_group(pid)


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


@functools.cache
def isolation_problem(
    python: str | None = None, site_packages: tuple[str, ...] | None = None
) -> str | None:
    """Why the namespaces mode cannot run here (one trial run, cached), or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"it needs Linux namespaces, and this is {sys.platform}"
    if os.geteuid() != 0:
        for knob, name in (
            ("/proc/sys/kernel/unprivileged_userns_clone", "kernel.unprivileged_userns_clone"),
            ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", None),
        ):
            with contextlib.suppress(OSError, ValueError):
                with open(knob) as f:
                    value = int(f.read())
                if name is not None and value == 0:
                    return f"unprivileged user namespaces are disabled ({name} = 0)"
                if name is None and value == 1:
                    return (
                        "AppArmor restricts unprivileged user namespaces "
                        "(kernel.apparmor_restrict_unprivileged_userns = 1)"
                    )
    with contextlib.suppress(OSError, ValueError), open("/proc/sys/user/max_user_namespaces") as f:
        if int(f.read()) == 0:
            return "user namespaces are disabled (user.max_user_namespaces = 0)"
    trial = _Trial(sys.executable if python is None else python, site_packages)
    try:
        result = trial.run("1 + 1")
    except ToolError as e:
        return str(e).removeprefix("the sandbox could not be set up: ")
    if result.result != "2":
        return f"a trial run in the sandbox failed: {result.error or result.stderr.strip()}"
    return None


class _Trial(Sandbox):
    """A Sandbox that skips its own availability check (it is the check)."""

    __slots__ = ()

    def __init__(self, python: str, site_packages: tuple[str, ...] | None) -> None:
        for name, value in (
            ("timeout", 10.0),
            ("memory_mb", 512),
            ("max_output", 2000),
            ("isolation", "namespaces"),
            ("max_processes", 8),
            ("disk_mb", 1),
            ("files", ()),
            ("outputs", ()),
            ("site_packages", site_packages),
            ("python", python),
        ):
            object.__setattr__(self, name, value)


def isolation_available() -> bool:
    """Whether ``Sandbox()`` can isolate code here (see `isolation_problem`)."""
    return isolation_problem() is None
