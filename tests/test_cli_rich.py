"""On a terminal, ``chatlane run`` and ``chat`` render the streamed answer as markdown with
rich: code highlighted, reasoning dimmed and apart, tool runs as panels. Piped, or with
``NO_COLOR`` or ``--no-color``, they print plain text. Run in a pseudo-terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_cli import CLI, fake
from test_cli_chat import Terminal

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BOLD = "\x1b[1m"
DIM = "\x1b[2"


def in_terminal(cli: CLI, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``chatlane ARGS`` with its output on a pseudo-terminal; its status and output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatlane", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env={**cli.env, "TERM": "xterm-256color", "COLUMNS": "80", **(env or {})},
        cwd=cli.home,
        close_fds=True,
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=10), seen.decode("utf-8", "replace").replace("\r\n", "\n")


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    return CLI(tmp_path)


def test_run_renders_markdown_with_highlighted_code_and_dimmed_reasoning(cli: CLI) -> None:
    status, out = in_terminal(cli, "run", "Advice?", "--backend", fake("markdown_thinker"))
    assert status == 0, out
    plain = ANSI.sub("", out)
    assert "bold advice" in plain
    assert "**bold**" not in plain  # rendered, not shown as markup
    assert "```" not in plain
    assert BOLD in out
    assert "print" in plain
    assert "print('hi')" in plain
    # The code block is highlighted: colour codes between its tokens.
    code = out[out.rindex("print") : out.rindex("hi")]
    assert "\x1b[38;" in code
    # Reasoning is shown, dimmed, before the answer.
    assert "Let me think about it." in plain
    assert plain.index("Let me think about it.") < plain.rindex("bold advice")
    assert DIM in out[: out.index("Let me think")]


def test_tool_runs_show_as_panels(cli: CLI) -> None:
    status, out = in_terminal(
        cli,
        "run",
        "Weather in Oslo?",
        "--backend",
        fake("weather_agent"),
        "--tool",
        fake("get_weather"),
    )
    assert status == 0, out
    plain = ANSI.sub("", out)
    assert "╭" in plain
    assert "tool call" in plain
    assert 'get_weather({"city": "Oslo"})' in plain
    assert "get_weather: ok" in plain
    assert "21 degrees and sunny in Oslo" in plain
    assert "[calling get_weather" not in plain  # the panels replace the bracket notes


@pytest.mark.parametrize("how", ["NO_COLOR", "--no-color"])
def test_no_color_prints_plain_text_on_a_terminal(cli: CLI, how: str) -> None:
    args = ["run", "Advice?", "--backend", fake("markdown_thinker")]
    env = {"NO_COLOR": "1"} if how == "NO_COLOR" else None
    status, out = in_terminal(
        cli, *([*args, "--no-color"] if how == "--no-color" else args), env=env
    )
    assert status == 0, out
    assert "\x1b[" not in out
    assert "Here is **bold** advice." in out
    assert "```python" in out


def test_piped_output_is_plain_text(cli: CLI) -> None:
    result = cli("run", "Advice?", "--backend", fake("markdown_thinker"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Here is **bold** advice.\n\n```python\nprint('hi')\n```\n"


def test_chat_renders_markdown_on_a_terminal(cli: CLI) -> None:
    terminal = Terminal(cli, "--backend", fake("markdown_thinker"), env={"TERM": "xterm-256color"})
    terminal.expect("> ")
    terminal.type("Advice?")
    seen = terminal.expect("advice.")
    assert terminal.close() == 0
    plain = ANSI.sub("", seen)
    assert "bold advice" in plain
    assert "**bold**" not in plain
    assert BOLD in seen
