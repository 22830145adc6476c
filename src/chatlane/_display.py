"""How the CLI shows an answer as it streams: plain text, or markdown rendered live with rich.

`PlainDisplay` writes the text as it comes and notes tool runs in brackets (for pipes, files,
``NO_COLOR``, ``--no-color`` and dumb terminals). `RichDisplay` renders the answer as
markdown while it streams (code blocks highlighted), shows reasoning dimmed and apart, and
tool calls and their results as compact panels. `display_for` picks one.
"""

from __future__ import annotations

import os
import time
from typing import IO, TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

__all__ = ["Display", "PlainDisplay", "RichDisplay", "display_for", "wants_rich"]


class Display(Protocol):
    def event(self, event: Any) -> None:
        """Show one event of a conversation stream (chat or agent event)."""

    def note(self, text: str) -> None:
        """Show a remark of the CLI's own (``[the run ended early: …]``)."""

    def close(self) -> None:
        """The answer ended (or broke off): show what is left."""


def _shown(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class PlainDisplay:
    """Text to ``out`` as it comes; tool runs and remarks to ``notes`` in brackets."""

    def __init__(self, out: IO[str] | None, notes: IO[str] | None) -> None:
        self.out = out
        self.notes = notes
        self._wrote_text = False

    def event(self, event: Any) -> None:
        from chatlane.agent import OutputRejected, StepFinished, ToolRunFinished, ToolRunStarted
        from chatlane.events import TextDelta

        if isinstance(event, TextDelta):
            if self.out is not None and event.choice == 0:
                self.out.write(event.text)
                self.out.flush()
                self._wrote_text = True
        elif isinstance(event, StepFinished):
            if self._wrote_text and self.out is not None and event.response.tool_calls:
                self.out.write("\n")  # the step's text ends; its tool runs follow
                self._wrote_text = False
        elif isinstance(event, ToolRunStarted):
            self.note(f"[calling {event.call.name}({event.call.raw_arguments})]")
        elif isinstance(event, ToolRunFinished):
            run = event.run
            self.note(f"[{run.call.name} {run.status}: {_shown(run.content)}]")
        elif isinstance(event, OutputRejected):
            again = "; asking again" if event.retry else ""
            self.note(f"[the answer does not fit the schema: {_first_line(event.error)}{again}]")

    def note(self, text: str) -> None:
        if self.notes is not None:
            self.notes.write(text + "\n")
            self.notes.flush()

    def close(self) -> None:
        pass


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class RichDisplay:
    """Markdown rendered live, reasoning dimmed, tool runs as panels (see the module doc)."""

    # Re-render at most this often: a markdown parse per token would cost quadratic time.
    _INTERVAL = 1 / 15

    def __init__(self, console: Console) -> None:
        self.console = console
        self._text = ""
        self._reasoning = ""
        self._live: Live | None = None
        self._rendered_at = 0.0

    def _renderable(self) -> RenderableType:
        from rich.console import Group
        from rich.markdown import Markdown
        from rich.text import Text

        parts: list[RenderableType] = []
        if self._reasoning:
            parts.append(Text(self._reasoning.strip("\n"), style="dim italic"))
            if self._text:
                parts.append(Text(""))  # reasoning stands apart from the answer
        if self._text:
            parts.append(Markdown(self._text, code_theme="monokai"))
        return Group(*parts)

    def _update(self, force: bool = False) -> None:
        from rich.live import Live

        now = time.monotonic()
        if self._live is None:
            self._live = Live(
                self._renderable(),
                console=self.console,
                auto_refresh=False,
                vertical_overflow="visible",
            )
            self._live.start()
            self._rendered_at = now
        elif force or now - self._rendered_at >= self._INTERVAL:
            self._live.update(self._renderable(), refresh=True)
            self._rendered_at = now

    def _flush(self) -> None:
        if self._live is not None:
            self._update(force=True)
            self._live.stop()
            self._live = None
        self._text = self._reasoning = ""

    def event(self, event: Any) -> None:
        from rich.panel import Panel
        from rich.text import Text

        from chatlane.agent import OutputRejected, ToolRunFinished, ToolRunStarted
        from chatlane.events import ReasoningDelta, TextDelta

        if isinstance(event, TextDelta):
            if event.choice == 0:
                self._text += event.text
                self._update()
        elif isinstance(event, ReasoningDelta):
            if event.choice == 0:
                self._reasoning += event.text
                self._update()
        elif isinstance(event, ToolRunStarted):
            self._flush()
            call = Text(f"{event.call.name}({_shown(event.call.raw_arguments, 400)})")
            self.console.print(
                Panel(
                    call, title="tool call", title_align="left", border_style="cyan", expand=False
                )
            )
        elif isinstance(event, ToolRunFinished):
            run = event.run
            style = "green" if run.ok else "red"
            self.console.print(
                Panel(
                    Text(_shown(run.content, 400)),
                    title=f"{run.call.name}: {run.status}",
                    title_align="left",
                    border_style=style,
                    expand=False,
                )
            )
        elif isinstance(event, OutputRejected):
            again = "; asking again" if event.retry else ""
            self.note(f"the answer does not fit the schema: {_first_line(event.error)}{again}")

    def note(self, text: str) -> None:
        from rich.text import Text

        self._flush()
        self.console.print(Text(text, style="yellow"))

    def close(self) -> None:
        self._flush()


def wants_rich(stream: IO[str], *, no_color: bool = False) -> bool:
    """Render with rich: ``stream`` is a terminal that can take it, and neither ``NO_COLOR``
    nor ``--no-color`` says otherwise (https://no-color.org)."""
    if no_color or os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("TERM", "") in ("", "dumb"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def display_for(out: IO[str] | None, notes: IO[str] | None, *, no_color: bool = False) -> Display:
    """The display for an answer streamed to ``out`` (None: not shown) with remarks to
    ``notes``."""
    if out is not None and wants_rich(out, no_color=no_color):
        from rich.console import Console

        return RichDisplay(Console(file=out, highlight=False))
    return PlainDisplay(out, notes)
