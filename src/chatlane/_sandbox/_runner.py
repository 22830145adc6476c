"""The sandbox's runner: runs the code like a notebook cell.

The launcher imports this module and calls `main` in its forked runner process once the
sandbox stands (inside, chatlane itself is not visible); importing it does nothing else. It reads the code from stdin, runs it, and writes
``{"result": repr of a final expression or None, "error": str or None}`` to fd 3 (as a
Python literal).
"""

import _ast
import contextlib
import os
import sys


def main() -> None:
    """Run the code from stdin; report on fd 3."""
    out = os.fdopen(3, "w", encoding="utf-8")
    source = sys.stdin.read()
    sys.stdin.close()
    sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 - lives as long as the code
    report: dict[str, object] = {"result": None, "error": None}
    try:
        # _ast and the PyCF_ONLY_AST flag (0x400) parse as ast.parse does, without the cost of
        # importing the ast module into every run.
        tree = compile(source, "<code>", "exec", 0x400)
        assert isinstance(tree, _ast.Module)
        last = None
        if tree.body and isinstance(tree.body[-1], _ast.Expr):
            final = tree.body.pop()
            assert isinstance(final, _ast.Expr)
            last = _ast.Expression(final.value)
        namespace = {"__name__": "__main__", "__builtins__": __builtins__}
        exec(compile(tree, "<code>", "exec"), namespace)
        if last is not None:
            value = eval(compile(last, "<code>", "eval"), namespace)
            if value is not None:
                report["result"] = repr(value)[:100000]
    except BaseException as e:
        import traceback

        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == "<code>"]
        lines = traceback.format_list(frames) + traceback.format_exception_only(type(e), e)
        sys.stderr.write("Traceback (most recent call last):\n" + "".join(lines))
        report["error"] = "".join(traceback.format_exception_only(type(e), e)).strip()[:2000]
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):  # a full disk must not hide the report
            stream.flush()
    error = report["error"]
    if isinstance(error, str) and "Errno 27" in error:
        report["error"] = "the code wrote more output than the sandbox allows"
    # repr, read back with ast.literal_eval: json would import re into every run.
    out.write(repr(report))
    out.close()
