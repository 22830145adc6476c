"""The code_interpreter sandbox: a separate process with limits and a clean environment.

The escape attempts, in every mode, are in test_sandbox_escapes.py.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from chatlane._sandbox import Sandbox, SandboxResult, isolation_problem
from chatlane.errors import InputError, SandboxUnavailable

PROBLEM = isolation_problem()
if PROBLEM is not None:
    print(f"isolation='namespaces' is not available here: {PROBLEM}")
needs_namespaces = pytest.mark.skipif(
    PROBLEM is not None, reason=f"isolation='namespaces' is not available here: {PROBLEM}"
)
FAST = Sandbox(timeout=5, isolation="namespaces" if PROBLEM is None else "limits-only")


def _process_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def _died(pid: int) -> bool:
    """Whether the process is gone (or a zombie): a SIGKILL takes a moment to land."""
    for _ in range(100):
        if _process_state(pid) in ("gone", "Z"):
            return True
        time.sleep(0.02)
    return False


def test_stdout_stderr_and_the_final_expression_are_captured() -> None:
    result = FAST.run("import sys\nprint('out')\nprint('err', file=sys.stderr)\nx = 20\nx + 22")
    assert result == SandboxResult(
        stdout="out\n",
        stderr="err\n",
        result="42",
        error=None,
        exit_code=0,
        timed_out=False,
        duration=result.duration,
        truncated=False,
        isolation=FAST.isolation,
    )
    assert result.ok
    assert result.to_text() == (
        "[stdout]\nout\n[/stdout]\n[stderr]\nerr\n[/stderr]\n[result]\n42\n[/result]"
    )


def test_a_final_none_or_statement_gives_no_result() -> None:
    assert FAST.run("print(None)").result is None
    assert FAST.run("x = 1").to_text() == "[no output]"


def test_an_exception_is_reported_with_a_traceback_of_the_code_only() -> None:
    result = FAST.run("def f():\n    return 1 / 0\n\nf()")
    assert not result.ok
    assert result.error == "ZeroDivisionError: division by zero"
    assert 'File "<code>", line 4, in <module>' in result.stderr
    assert 'File "<code>", line 2, in f' in result.stderr
    assert "_RUNNER" not in result.stderr
    assert "<string>" not in result.stderr


def test_a_syntax_error_is_reported() -> None:
    result = FAST.run("def (:")
    assert result.error is not None
    assert result.error.endswith("SyntaxError: invalid syntax")
    assert 'File "<code>", line 1' in result.error


def test_a_runaway_loop_is_killed_at_the_time_limit() -> None:
    result = Sandbox(timeout=1).run("while True:\n    pass")
    assert result.timed_out
    assert result.error == "the code was stopped after the time limit of 1 s"
    assert 1 <= result.duration < 5


def test_children_of_the_code_die_with_it() -> None:
    code = (
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(p.pid, flush=True)\n"
        "p.wait()"
    )
    result = Sandbox(timeout=1, isolation="limits-only").run(code)
    assert result.timed_out
    pid = int(result.stdout.split()[0])
    # The grandchild was killed with its group: it is gone (or a zombie being reaped).
    assert _died(pid)


@needs_namespaces
def test_isolated_code_cannot_escape_the_kill_with_a_new_session() -> None:
    marker = f"chatlane-escape-{os.getpid()}-{time.monotonic_ns()}"
    code = (
        "import subprocess, sys\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', "
        f"{marker!r}], start_new_session=True)\n"
        "while True:\n    pass"
    )
    result = Sandbox(timeout=1).run(code)
    assert result.timed_out

    def survivors() -> list[str]:
        found = []
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(entry)
            except OSError:
                continue
        return [pid for pid in found if _process_state(int(pid)) not in ("gone", "Z")]

    for _ in range(100):
        if not survivors():
            break
        time.sleep(0.02)
    assert survivors() == []


def test_the_memory_limit_holds() -> None:
    result = Sandbox(timeout=5, memory_mb=256).run("block = bytearray(1024 * 1024 * 1024)")
    assert result.error == "MemoryError"


def test_the_limits_cannot_be_raised_by_the_code() -> None:
    code = (
        "import resource\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_AS)\n"
        "try:\n"
        "    resource.setrlimit(resource.RLIMIT_AS, (hard * 2, hard * 2))\n"
        "    raised = True\n"
        "except (ValueError, OSError):\n"
        "    raised = False\n"
        "(hard // 2**20, raised)"
    )
    sandbox = Sandbox(timeout=5, memory_mb=300, isolation=FAST.isolation)
    assert sandbox.run(code).result == "(300, False)"


def test_the_callers_environment_is_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATLANE_TEST_SECRET", "sk-very-secret-value")
    result = FAST.run("import os\nsorted(os.environ)")
    assert result.result is not None
    assert "CHATLANE_TEST_SECRET" not in result.result
    assert eval(result.result) == ["HOME", "LANG", "PATH", "TMPDIR"]


@needs_namespaces
def test_isolated_code_sees_no_other_process_and_no_network() -> None:
    code = (
        "import os, socket\n"
        "pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
        "    net = 'connected'\n"
        "except OSError as e:\n"
        "    net = type(e).__name__\n"
        "interfaces = [name for _, name in socket.if_nameindex()]\n"
        "(pids, os.getpid(), net, interfaces)"
    )
    result = Sandbox(timeout=5).run(code)
    assert result.result is not None
    pids, me, net, interfaces = eval(result.result)
    # Only the sandbox's init (pid 1) and the code itself: no /proc/<caller>/environ.
    assert (pids, me) == ([1, 2], 2)
    assert net != "connected"  # even the loopback interface is down
    assert interfaces == ["lo"]


@pytest.mark.parametrize("isolation", ["namespaces", "limits-only"])
def test_the_code_runs_in_a_fresh_directory_that_is_removed(isolation: str) -> None:
    if isolation == "namespaces" and PROBLEM is not None:
        pytest.skip(f"isolation='namespaces' is not available here: {PROBLEM}")
    sandbox = Sandbox(timeout=5, isolation=isolation)  # type: ignore[arg-type]
    code = "import os\nopen('note.txt', 'w').write('x')\n(os.getcwd(), os.listdir('.'))"
    first = sandbox.run(code)
    assert first.result is not None
    workdir, listing = eval(first.result)
    assert listing == ["note.txt"]
    assert workdir != os.getcwd()
    # A second run starts empty again: nothing of the first is left.
    second = sandbox.run("import os\nos.listdir('.')")
    assert second.result == "[]"
    if isolation == "limits-only":
        assert os.path.basename(os.path.dirname(workdir)).startswith("chatlane-sandbox-")
        assert not os.path.exists(workdir)


def test_output_is_cut_at_the_limit() -> None:
    result = Sandbox(timeout=5, max_output=100).run("print('x' * 1000)\n'done'")
    assert result.truncated
    assert result.stdout == "x" * 100
    assert result.result == "'done'"
    assert result.to_text().endswith("(output was cut at the sandbox's limit)")


def test_a_print_flood_is_stopped_by_the_file_size_limit() -> None:
    result = Sandbox(timeout=10, max_output=1000).run("while True:\n    print('y' * 1000)")
    assert result.error == "the code wrote more output than the sandbox allows"
    assert result.truncated
    assert len(result.stdout) == 1000


def test_exit_codes_and_signals_are_reported() -> None:
    assert FAST.run("import os\nos._exit(3)").error == "the interpreter exited with status 3"
    assert FAST.run("raise SystemExit(0)").error == "SystemExit: 0"


def test_the_async_twin_gives_the_same_result() -> None:
    code = "print('a')\n1 + 1"
    sync = FAST.run(code)
    result = asyncio.run(FAST.arun(code))
    assert (result.stdout, result.result, result.error) == (sync.stdout, sync.result, sync.error)


def test_the_async_twin_kills_a_runaway_loop() -> None:
    result = asyncio.run(Sandbox(timeout=1).arun("while True:\n    pass"))
    assert result.timed_out
    assert result.error == "the code was stopped after the time limit of 1 s"


def test_cancelling_the_async_twin_kills_the_process() -> None:
    # limits-only, so the code can leave its pid where this test can read it (/tmp).
    pid_file = Path(f"/tmp/chatlane-cancel-{os.getpid()}-{time.monotonic_ns()}")
    code = f"import os\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\nwhile True:\n    pass"

    async def main() -> None:
        task = asyncio.create_task(Sandbox(timeout=30, isolation="limits-only").arun(code))
        for _ in range(200):
            await asyncio.sleep(0.05)
            if pid_file.exists() and pid_file.read_text():
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(main())
        assert _died(int(pid_file.read_text()))
    finally:
        pid_file.unlink(missing_ok=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"memory_mb": 10}, "memory_mb must be at least 64"),
        ({"max_output": 0}, "max_output must be a positive int"),
        ({"isolation": "none"}, "isolation must be 'namespaces' or 'limits-only'"),
        ({"max_processes": 0}, "max_processes must be at least 1"),
        ({"outputs": ("../x",)}, "an output must be a plain file name"),
        ({"files": {"a/b": b"x"}}, "an input file's name must be a plain file name"),
    ],
)
def test_bad_settings_are_input_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        Sandbox(**{"isolation": "limits-only", **kwargs})


def test_code_must_be_text() -> None:
    with pytest.raises(InputError, match="code must be a str"):
        FAST.run(b"print(1)")  # type: ignore[arg-type]


def test_where_the_host_cannot_isolate_the_sandbox_refuses_unless_limits_only_is_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chatlane import _sandbox
    from chatlane.agent import run
    from chatlane.backends.fake import Fake

    monkeypatch.setattr(_sandbox, "isolation_problem", lambda *a: "no user namespaces (test)")
    with pytest.raises(SandboxUnavailable, match=r"no user namespaces \(test\).*limits-only"):
        Sandbox()
    with pytest.raises(SandboxUnavailable):
        run(Fake(["x"]), "go", code_interpreter=True)
    limited = Sandbox(isolation="limits-only")
    assert limited.run("1 + 1").result == "2"
    result = run(
        Fake([Fake.calls(Fake.call("code_interpreter", {"code": "6 * 7"})), "42"]),
        "go",
        code_interpreter=limited,
    )
    assert result.sandbox_isolation == "limits-only"
    assert result.tool_runs[0].value.isolation == "limits-only"


@pytest.mark.parametrize("isolation", ["namespaces", "limits-only"])
def test_named_files_go_in_and_named_outputs_come_back(isolation: str, tmp_path: Path) -> None:
    if isolation == "namespaces" and PROBLEM is not None:
        pytest.skip(f"isolation='namespaces' is not available here: {PROBLEM}")
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n3,4\n")
    sandbox = Sandbox(
        timeout=5,
        isolation=isolation,  # type: ignore[arg-type]
        files=[data],
        outputs=("sum.txt",),
    )
    code = (
        "import csv, os\n"
        "rows = list(csv.DictReader(open('data.csv')))\n"
        "open('sum.txt', 'w').write(str(sum(int(r['b']) for r in rows)))\n"
        "os.symlink('/etc/hostname', 'link.txt')\n"
        "sorted(os.listdir('.'))"
    )
    result = sandbox.run(code, files={"extra.bin": b"\x00\x01"}, outputs=["link.txt", "none"])
    assert result.error is None, result.stderr
    assert result.result == "['data.csv', 'extra.bin', 'link.txt', 'sum.txt']"
    assert result.files == {"sum.txt": b"6"}
    # A link the code planted is never followed back on the host.
    assert result.missing_files == {"link.txt": "not a regular file", "none": "missing"}
    assert "sum.txt (1 bytes)" in result.to_text()


def test_file_names_cannot_leave_the_working_directory() -> None:
    sandbox = Sandbox(timeout=5, isolation="limits-only")
    with pytest.raises(InputError, match="plain file name"):
        sandbox.run("1", outputs=["/etc/passwd"])
    with pytest.raises(InputError, match="plain file name"):
        sandbox.run("1", files={"..": b"x"})


@pytest.mark.parametrize("isolation", ["namespaces", "limits-only"])
def test_the_cli_says_which_isolation_the_code_interpreter_runs_under(
    isolation: str, tmp_path: Path
) -> None:
    if isolation == "namespaces" and PROBLEM is not None:
        pytest.skip(f"isolation='namespaces' is not available here: {PROBLEM}")
    import json

    from test_cli import CLI, fake

    cli = CLI(tmp_path)
    option = "--code-interpreter" if isolation == "namespaces" else "--code-interpreter=limits-only"
    result = cli("run", "Compute", "--json", "--backend", fake("coder"), option)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["sandbox_isolation"] == isolation
    assert body["text"] == "The code says: [result]\n42\n[/result]"
    assert f"[code_interpreter: model code runs with isolation={isolation}]" in result.stderr


def test_sandbox_unavailable_names_what_is_missing_on_a_host_without_user_namespaces() -> None:
    # A real host without them: a user namespace (the test's, not the sandbox's) in which
    # creating further user namespaces is switched off.
    import shutil
    import subprocess
    import sys

    unshare = shutil.which("unshare")
    if unshare is None or PROBLEM is not None:
        pytest.skip("needs unshare(1) and user namespaces to build such a host")
    script = (
        "from chatlane._sandbox import Sandbox\n"
        "from chatlane.errors import SandboxUnavailable\n"
        "try:\n"
        "    Sandbox()\n"
        "except SandboxUnavailable as e:\n"
        "    print(e)\n"
        "print(Sandbox(isolation='limits-only').run('1 + 1').result)\n"
    )
    result = subprocess.run(
        [
            unshare,
            "--user",
            "--map-root-user",
            "sh",
            "-c",
            'echo 0 > /proc/sys/user/max_user_namespaces && exec "$0" -c "$1"',
            sys.executable,
            script,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    refusal, limited = result.stdout.splitlines()
    assert refusal.startswith("the sandbox cannot isolate code on this host: user namespaces")
    assert "(user.max_user_namespaces = 0)" in refusal
    assert "isolation='limits-only'" in refusal
    assert limited == "2"


@needs_namespaces
def test_the_examples_of_docs_sandbox_md_run_as_written() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "sandbox.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in doc.split("```python\n")[1:]]
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/sandbox.md", "exec"), {})


def _readable_by_nobody(path: str) -> bool:
    while True:
        mode = os.stat(path).st_mode
        if not mode & (0o001 if os.path.isdir(path) else 0o004):
            return False
        if path == "/":
            return True
        path = os.path.dirname(path)


def test_an_unprivileged_caller_gets_the_same_isolation() -> None:
    # The id-map path an ordinary user takes (no root outside): run the sandbox as nobody,
    # with a system interpreter nobody can read, importing chatlane from this checkout.
    import shutil
    import subprocess

    setpriv = shutil.which("setpriv")
    system_python = os.path.realpath("/usr/bin/python3")
    src = str(Path(__file__).resolve().parent.parent / "src")
    reasons = [
        (os.geteuid() != 0, "needs root to become nobody"),
        (setpriv is None, "needs setpriv(1)"),
        (not os.path.exists(system_python), "needs /usr/bin/python3"),
        (PROBLEM is not None, f"isolation='namespaces' is not available here: {PROBLEM}"),
    ]
    for failed, reason in reasons:
        if failed:
            pytest.skip(reason)
    if not (
        _readable_by_nobody(system_python) and _readable_by_nobody(src + "/chatlane/errors.py")
    ):
        pytest.skip("needs a system interpreter and a checkout that nobody can read")
    assert setpriv is not None
    script = (
        f"import sys\nsys.path.insert(0, {src!r})\n"
        "from chatlane._sandbox import Sandbox\n"
        "r = Sandbox(timeout=5, files={'a.txt': b'hi'}, outputs=['b.txt']).run(\n"
        "    'import os\\n'\n"
        '    \'open("b.txt", "w").write(open("a.txt").read() * 2)\\n\'\n'
        '    \'try:\\n    open("/etc/shadow")\\n    s = "read"\\n\'\n'
        "    'except OSError as e:\\n    s = type(e).__name__\\n'\n"
        "    '(os.getuid(), s, os.path.exists(\"/home\"))')\n"
        "print(r.result, r.files, r.isolation)\n"
    )
    result = subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", system_python, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
        env={"PATH": os.defpath},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "(65534, 'FileNotFoundError', False) {'b.txt': b'hihi'} namespaces"
    )


@pytest.mark.parametrize("isolation", ["namespaces", "limits-only"])
def test_site_packages_chooses_what_the_code_may_import(isolation: str, tmp_path: Path) -> None:
    if isolation == "namespaces" and PROBLEM is not None:
        pytest.skip(f"isolation='namespaces' is not available here: {PROBLEM}")
    packages = tmp_path / "packages"
    packages.mkdir()
    (packages / "shared_helper.py").write_text("ANSWER = 42\n")
    for directory in (tmp_path, packages):
        directory.chmod(0o755)  # limits-only as root: the code is nobody
    (packages / "shared_helper.py").chmod(0o644)
    code = "import sys\nimport shared_helper\n(shared_helper.ANSWER, [p for p in sys.path if 'site-packages' in p])"
    result = Sandbox(timeout=5, isolation=isolation, site_packages=(str(packages),)).run(code)  # type: ignore[arg-type]
    answer, site_dirs = eval(result.result or "None")
    assert answer == 42
    assert site_dirs == []  # not the interpreter's own: only what was named
    stdlib_only = Sandbox(timeout=5, isolation=isolation, site_packages=()).run(code)  # type: ignore[arg-type]
    assert stdlib_only.error == "ModuleNotFoundError: No module named 'shared_helper'"
