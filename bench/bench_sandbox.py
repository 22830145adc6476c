"""Starting the code sandbox and running ``print(1)``: the isolating sandbox against the one before.

The previous sandbox (a ``python -I`` process, in ``unshare`` user, pid and network namespaces
where available) is loaded from git (the commit before this sandbox, ``OLD_COMMIT``) into a
throwaway module, so both run side by side in one process, interleaved round by round so
that the machine's load falls on both alike. The ratio is new / old; the goal is under 2x.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from chatlane._sandbox import Sandbox, isolation_problem

OLD_COMMIT = "6d6113f"
ROOT = Path(__file__).resolve().parent.parent


def _old_module() -> ModuleType | None:
    try:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:src/chatlane/_sandbox.py"],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp(prefix="chatlane-bench-")) / "old_sandbox.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("_old_sandbox", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_old_sandbox"] = module
    spec.loader.exec_module(module)
    return module


def _paired(runs: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median seconds of each, measured in interleaved rounds."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for function in runs.values():
        function()  # warm: caches, the probe, the page cache
    for _ in range(rounds):
        for name, function in runs.items():
            started = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    old = _old_module()
    if old is None:
        print(f"(the previous sandbox could not be read from git at {OLD_COMMIT}: skipped)")
        return
    code = "print(1)"
    runs: dict[str, Callable[[], Any]] = {}
    if old.isolation_available():
        runs["before: python -I in unshare namespaces"] = lambda: old.Sandbox(isolate=True).run(
            code
        )
    runs["before: python -I, no namespaces"] = lambda: old.Sandbox(isolate=False).run(code)
    problem = isolation_problem()
    if problem is None:
        runs["now: isolation='namespaces'"] = lambda: Sandbox().run(code)
    else:
        print(f"(isolation='namespaces' is not available here: {problem})")
    runs["now: isolation='limits-only'"] = lambda: Sandbox(isolation="limits-only").run(code)
    rounds = int(os.environ.get("CHATLANE_BENCH_ROUNDS", "20"))
    medians = _paired(runs, rounds)
    reference = next(iter(medians.values()))
    print(f"start a sandbox and run print(1), {rounds} interleaved rounds, median")
    print(f"{'implementation':44} {'median':>10} {'ratio':>7}")
    for name, seconds in medians.items():
        print(f"{name:44} {seconds * 1000:8.1f}ms {seconds / reference:6.2f}x")
    print(f"(ratio against {next(iter(medians))!r}, today's default where namespaces exist)")


if __name__ == "__main__":
    main()
