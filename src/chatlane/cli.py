"""The ``chatlane`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chatlane", description="Chat with LLMs.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run the demo conversation")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from chatlane.demo import run

        return run(sys.stdout)
    return 2  # pragma: no cover - argparse rejects unknown commands
