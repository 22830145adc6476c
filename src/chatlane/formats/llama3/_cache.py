"""The Llama 3 renderer's memory: the only stateful part of the format.

A `RenderCache` keeps what earlier renders produced, keyed by the identity of the immutable
objects they came from (messages, tools): the preambles, each message's rendering, the last
conversation (to extend it when it grows) and the last prompt (to copy its common start).
Nothing here knows the format's rules; `_format.Llama3` asks and files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

if TYPE_CHECKING:
    from chatlane.messages import Message
    from chatlane.tools import Tool

_Rendered: TypeAlias = tuple[str, Sequence[int]]
"""A rendered part: its text and its tokens (a tuple, or a list that nothing changes once it
is here, which saves a copy per message). A plain tuple rather than a NamedTuple: a prompt
builds one per message, and a tuple subclass costs more to build than the tokens of a short
message cost to look up."""

_How: TypeAlias = tuple[bool, bool, Any]
"""How a message was rendered: (left open, tokenized, the profile's per-conversation
context, such as the hf profile's built-ins)."""

CACHE_SIZE = 4096


class State(NamedTuple):
    """The last conversation rendered, to extend it when it grows."""

    messages: tuple[Message, ...]
    tools: tuple[Tool, ...]
    tool_choice: str | None
    tokenize: bool
    parts: tuple[_Rendered, ...]
    """Every part but the closing assistant header."""
    context: Any


class LastPrompt(NamedTuple):
    # (a NamedTuple: built on every render, and cheaper than a frozen dataclass)
    parts: list[_Rendered]
    tokens: tuple[int, ...]
    text: str
    ends: list[tuple[int, int]]
    """Where each part ends in ``tokens`` and ``text``: filled by the next render that
    starts with some of these parts (a single render never needs them)."""


def same(a: object, b: object) -> bool:
    """Cache owners are compared by identity (element by element for tuples): the cached
    objects are immutable, and identity is what makes a lookup cheap."""
    if a is b:
        return True
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        return all(same(x, y) for x, y in zip(a, b, strict=True))
    return False


class RenderCache:
    """What a `Llama3` remembers between renders (see the module docstring)."""

    __slots__ = ("fixed", "last", "messages", "parts", "state", "unfiled")

    def __init__(self) -> None:
        self.parts: dict[tuple[Any, ...], tuple[object, _Rendered]] = {}
        """Preambles by key, with the objects they were built from."""
        self.messages: dict[int, tuple[Message, _How, _Rendered]] = {}
        """id(message) -> (the message, how it was rendered, the rendering)."""
        self.unfiled: list[tuple[Sequence[Message], list[_Rendered], _How]] = []
        """Renderings not yet in ``messages``, filed by the next render that looks there: a
        single render, and a conversation that only grows, never need them."""
        self.fixed: dict[tuple[str, bool], _Rendered] = {}
        """The parts every prompt repeats (``<|begin_of_text|>``, the assistant header)."""
        self.state: State | None = None
        self.last: LastPrompt | None = None

    def cached(
        self, key: tuple[Any, ...], owner: object, build: Callable[[], _Rendered]
    ) -> _Rendered:
        """The part filed under ``key`` for ``owner``, built and filed when missing."""
        hit = self.parts.get(key)
        if hit is not None and same(hit[0], owner):
            return hit[1]
        rendered = build()
        if len(self.parts) >= CACHE_SIZE:
            # Drop the oldest half: conversations that moved on.
            for old in list(self.parts)[: CACHE_SIZE // 2]:
                self.parts.pop(old, None)
        self.parts[key] = (owner, rendered)
        return rendered

    def fixed_part(self, name: str, tokenize: bool, build: Callable[[], _Rendered]) -> _Rendered:
        # The same object every time, so that join() sees the prompts' common start.
        part = self.fixed.get((name, tokenize))
        if part is None:
            part = self.fixed[(name, tokenize)] = build()
        return part

    def make_room(self, incoming: int) -> None:
        """Drop the oldest message renderings when ``incoming`` more would overflow."""
        cache = self.messages
        if len(cache) + incoming > CACHE_SIZE:
            for old in list(cache)[: max(len(cache) // 2, len(cache) + incoming - CACHE_SIZE)]:
                cache.pop(old, None)

    def file_messages(self) -> None:
        """File the renderings of earlier renders in ``messages``."""
        cache = self.messages
        for body, parts, how in self.unfiled:
            for message, rendered in zip(body, parts, strict=True):
                cache[id(message)] = (message, how, rendered)
        self.unfiled.clear()

    def join(self, parts: list[_Rendered]) -> tuple[str, tuple[int, ...]]:
        """The prompt's text and tokens from its parts. The previous prompt's parts that this
        one starts with (the same objects, from the cache) are copied from the previous
        prompt in one slice; only new parts are joined."""
        last = self.last
        k = 0
        if last is not None:
            old = last.parts
            n = min(len(old), len(parts))
            while k < n and old[k] is parts[k]:
                k += 1
        # Extending a list slice by slice beats chain() item by item.
        joined: list[int] = []
        if k and last is not None:
            ends = last.ends
            if len(ends) < k:
                # Where the previous prompt's parts end, counted now that they are needed.
                t_end, x_end = ends[-1] if ends else (0, 0)
                for text, tokens in last.parts[len(ends) :]:
                    t_end += len(tokens)
                    x_end += len(text)
                    ends.append((t_end, x_end))
            t_end, x_end = ends[k - 1]
            new = parts[k:]
            for _, tokens in new:
                joined += tokens
            token_tuple = last.tokens[:t_end] + tuple(joined)
            text = last.text[:x_end] + "".join([part[0] for part in new])
            ends = ends[:k]
        else:
            for _, tokens in parts:
                joined += tokens
            token_tuple = tuple(joined)
            text = "".join([part[0] for part in parts])
            ends = []
        self.last = LastPrompt(parts, token_tuple, text, ends)
        return text, token_tuple

    def is_empty(self) -> bool:
        """Nothing is remembered (what a cold render starts from)."""
        return not (
            self.parts or self.messages or self.unfiled or self.fixed or self.state or self.last
        )
