"""docs/cli.md is the command line's own help, so it cannot drift."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from chatlane.cli import cli_reference

DOC = Path(__file__).parents[1] / "docs" / "cli.md"
REGENERATE = (
    "docs/cli.md is out of date; regenerate it with: .venv/bin/python -c "
    "\"from chatlane.cli import cli_reference; print(cli_reference(), end='')\" > docs/cli.md"
)


def sections() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    return dict(re.findall(r"^## (.+?)\n\n```text\n(.*?)\n```$", text, re.MULTILINE | re.DOTALL))


def test_the_reference_matches_the_code() -> None:
    assert DOC.read_text(encoding="utf-8") == cli_reference(), REGENERATE


def test_every_command_is_documented() -> None:
    assert set(sections()) == {
        "chatlane",
        *(
            f"chatlane {c}"
            for c in ("chat", "run", "render", "parse", "doctor", "logs", "batch", "demo", "serve")
        ),
        *(f"chatlane logs {a}" for a in ("list", "show", "search", "path")),
    }


@pytest.mark.parametrize("command", ["chatlane", "chatlane run", "chatlane logs search"])
def test_the_reference_is_what_help_prints(command: str) -> None:
    args = [*command.split()[1:], "--help"]
    out = subprocess.run(
        [sys.executable, "-m", "chatlane", *args],
        capture_output=True,
        text=True,
        check=True,
        env={"COLUMNS": "102", "PATH": "/usr/bin:/bin"},  # argparse wraps at COLUMNS - 2
    ).stdout
    assert out.rstrip() == sections()[command]
