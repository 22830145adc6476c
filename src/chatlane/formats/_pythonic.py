"""Read Python-style tool calls such as ``[f(a=1, b="x, y"), g()]`` without running them.

Llama 3.2 and 3.3 write custom tool calls as a Python list of calls, and Llama 3.1 writes
built-in calls as ``brave_search.call(query="...")``. Models do not write strict Python:
names carry hyphens (``get-weather``), values are JSON literals (``true``, ``null``) as
often as Python ones, and strings contain commas, brackets and quotes. ``ast`` reads
``get-weather(a=1)`` as a subtraction and ``true`` as a variable, so this is a small
recursive-descent reader of exactly that grammar. Nothing here evaluates code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PyCall", "parse_call", "parse_call_list", "read_call_list"]

_NAME = re.compile(r"[A-Za-z_][\w.\-]*")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_WS = re.compile(r"\s*")
_KEYWORD = re.compile(r"([A-Za-z_]\w*)\s*=(?!=)")
_CONSTANTS: dict[str, Any] = {
    "true": True,
    "false": False,
    "null": None,
    "True": True,
    "False": False,
    "None": None,
}
_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "b": "\b",
    "f": "\f",
    "v": "\v",
    "a": "\a",
    "0": "\0",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "/": "/",
    "\n": "",
}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}
# The usual argument, ``key="text"`` (escapes limited to \" \\ \n \t \/), ``key='text'``,
# ``key=12`` or ``key=true``, up to its comma or the closing parenthesis, read in one regex
# step; anything else (and a triple quote, which fails the match) goes through the reader.
_SIMPLE_KWARG = re.compile(
    r"""\s*([A-Za-z_]\w*)\s*=(?!=)\s*"""
    r"""(?:"((?:[^"\\]|\\["\\nt/])*)"|'([^'\\]*)'|(-?\d+)(?![.\deE])"""
    r"""|(true|false|null|True|False|None)(?![\w.\-]))"""
    r"""\s*(?:,|(?=\)))"""
)
_SIMPLE_ESCAPE = re.compile(r"\\(.)")


@dataclass(slots=True)
class PyCall:
    """One call as written: its name, keyword and positional arguments, and argument text."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    args: list[Any] = field(default_factory=list)
    raw_args: str = ""


class _Invalid(Exception):
    pass


class _Reader:
    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    # The small methods skip the whitespace regex when no whitespace is next: most calls
    # have none, and these run for every token of a call.

    def ws(self) -> None:
        text, pos = self.text, self.pos
        if pos < len(text) and text[pos].isspace():
            m = _WS.match(text, pos)
            assert m is not None
            self.pos = m.end()

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def expect(self, char: str) -> None:
        if not self.accept(char):
            raise _Invalid

    def accept(self, char: str) -> bool:
        text, pos = self.text, self.pos
        if pos < len(text) and text[pos].isspace():
            m = _WS.match(text, pos)
            assert m is not None
            pos = m.end()
        if text.startswith(char, pos):
            self.pos = pos + 1
            return True
        self.pos = pos
        return False

    def name(self) -> str:
        self.ws()
        m = _NAME.match(self.text, self.pos)
        if m is None:
            raise _Invalid
        self.pos = m.end()
        return m.group()

    def call(self) -> PyCall:
        name = self.name()
        self.expect("(")
        start = self.pos
        call = PyCall(name)
        while not self.accept(")"):
            simple = _SIMPLE_KWARG.match(self.text, self.pos)
            if simple is not None:
                key = simple.group(1)
                if key in call.kwargs:
                    raise _Invalid
                call.kwargs[key] = _simple_value(simple)
                self.pos = simple.end()
                continue
            self.ws()
            m = _KEYWORD.match(self.text, self.pos)
            if m is not None:
                self.pos = m.end()
                key = m.group(1)
                if key in call.kwargs:
                    raise _Invalid
                call.kwargs[key] = self.value()
            elif call.kwargs:
                raise _Invalid  # a positional argument after a keyword one
            else:
                call.args.append(self.value())
            self.ws()
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != ")":
                raise _Invalid
        call.raw_args = self.text[start : self.pos - 1].strip()
        return call

    def value(self) -> Any:
        self.ws()
        char = self.peek()
        if char in ('"', "'"):
            return self.string()
        if char == "[":
            self.pos += 1
            return self.sequence("]")
        if char == "(":
            self.pos += 1
            return self.sequence(")")
        if char == "{":
            self.pos += 1
            return self.mapping()
        m = _NUMBER.match(self.text, self.pos)
        if m is not None:
            self.pos = m.end()
            token = m.group()
            try:
                return int(token)
            except ValueError:
                return float(token)
        m = _NAME.match(self.text, self.pos)
        if m is not None and m.group() in _CONSTANTS:
            self.pos = m.end()
            return _CONSTANTS[m.group()]
        raise _Invalid

    def sequence(self, close: str) -> list[Any]:
        items: list[Any] = []
        while not self.accept(close):
            items.append(self.value())
            self.ws()
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != close:
                raise _Invalid
        return items

    def mapping(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        while not self.accept("}"):
            key = self.value()
            if isinstance(key, dict | list):
                raise _Invalid
            self.expect(":")
            result[key if isinstance(key, str) else _key_text(key)] = self.value()
            self.ws()
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != "}":
                raise _Invalid
        return result

    def string(self) -> str:
        text = self.text
        quote = text[self.pos]
        if text.startswith(quote * 3, self.pos):
            quote *= 3
        i = self.pos + len(quote)
        out: list[str] = []
        while True:
            j = _next_special(text, i, quote[0])
            if j < 0:
                raise _Invalid  # unterminated
            out.append(text[i:j])
            if text[j] == "\\":
                i = _unescape(text, j, out)
                continue
            if text.startswith(quote, j):
                self.pos = j + len(quote)
                return "".join(out)
            out.append(text[j])  # a lone quote inside a triple-quoted string
            i = j + 1


def _simple_value(m: re.Match[str]) -> Any:
    double, single, number, constant = m.group(2, 3, 4, 5)
    if double is not None:
        if "\\" in double:
            return _SIMPLE_ESCAPE.sub(lambda e: _ESCAPES[e.group(1)], double)
        return double
    if single is not None:
        return single
    if number is not None:
        return int(number)
    return _CONSTANTS[constant]


def _next_special(text: str, start: int, quote: str) -> int:
    q = text.find(quote, start)
    b = text.find("\\", start)
    if b >= 0 and (q < 0 or b < q):
        return b
    return q


def _unescape(text: str, j: int, out: list[str]) -> int:
    """Decode the escape at ``text[j]`` (a backslash) into ``out``; return where reading goes on."""
    char = text[j + 1 : j + 2]
    if char in _HEX_ESCAPES:
        digits = text[j + 2 : j + 2 + _HEX_ESCAPES[char]]
        if len(digits) == _HEX_ESCAPES[char] and all(c in "0123456789abcdefABCDEF" for c in digits):
            code = int(digits, 16)
            end = j + 2 + len(digits)
            # JSON writes astral characters as a surrogate pair: \ud83d\ude00.
            if 0xD800 <= code < 0xDC00 and text[end : end + 2] == "\\u":
                low_digits = text[end + 2 : end + 6]
                if len(low_digits) == 4 and all(c in "0123456789abcdefABCDEF" for c in low_digits):
                    low = int(low_digits, 16)
                    if 0xDC00 <= low < 0xE000:
                        out.append(chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)))
                        return end + 6
            if code <= 0x10FFFF:
                out.append(chr(code))
                return end
    elif char in _ESCAPES:
        out.append(_ESCAPES[char])
        return j + 2
    # An unknown escape keeps its backslash, as in Python.
    out.append("\\" + char)
    return j + 1 + len(char)


def _key_text(key: Any) -> str:
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def parse_call_list(text: str) -> list[PyCall] | None:
    """The calls of ``[f(a=1), g()]``, or None when ``text`` is not exactly such a list."""
    read = read_call_list(text)
    if read is None or read[1] != len(text):
        return None
    return read[0]


def read_call_list(text: str, start: int = 0) -> tuple[list[PyCall], int] | None:
    """The calls of the list ``[f(a=1), g()]`` at ``text[start]`` (after whitespace) and
    where it ends, whitespace after it included; None when no such list is there."""
    reader = _Reader(text)
    reader.pos = start
    try:
        reader.expect("[")
        calls: list[PyCall] = []
        while not reader.accept("]"):
            calls.append(reader.call())
            reader.ws()
            if reader.peek() == ",":
                reader.pos += 1
            elif reader.peek() != "]":
                return None
        reader.ws()
    except (_Invalid, RecursionError):
        return None
    if not calls:
        return None
    return calls, reader.pos


def parse_call(text: str) -> PyCall | None:
    """The call ``f(a=1)``, or None when ``text`` is not exactly one such call."""
    reader = _Reader(text)
    try:
        call = reader.call()
        reader.ws()
    except (_Invalid, RecursionError):
        return None
    if reader.pos != len(text):
        return None
    return call
