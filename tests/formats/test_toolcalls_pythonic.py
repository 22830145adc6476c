"""The reader of Python-style calls (``[f(a=1), g()]``, ``brave_search.call(query="...")``)."""

from __future__ import annotations

from typing import Any

import pytest

from chatlane.formats._pythonic import parse_call, parse_call_list


def read_list(text: str) -> list[tuple[str, dict[str, Any], list[Any]]] | None:
    calls = parse_call_list(text)
    return None if calls is None else [(c.name, c.kwargs, c.args) for c in calls]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[f()]", [("f", {}, [])]),
        ("[ f ( ) , g-h ( a = 1 , ) , ]", [("f", {}, []), ("g-h", {"a": 1}, [])]),
        ("[a.b.c(x=-1.5e3, y=+2, z=.5)]", [("a.b.c", {"x": -1500.0, "y": 2, "z": 0.5}, [])]),
        ('[f(s="a, b) ]", t=\'it"s\')]', [("f", {"s": "a, b) ]", "t": 'it"s'}, [])]),
        (
            "[f(x=[1, [2, (3, 4)], {'k': {1: None}}])]",
            [("f", {"x": [1, [2, [3, 4]], {"k": {"1": None}}]}, [])],
        ),
        (
            "[f(a=true, b=False, c=null, d=None)]",
            [("f", {"a": True, "b": False, "c": None, "d": None}, [])],
        ),
        ("[f({true: 1, null: 2, 3: 4})]", [("f", {}, [{"true": 1, "null": 2, "3": 4}])]),
        ('[f(code="""print("hi")\nx = \'y\'""")]', [("f", {"code": "print(\"hi\")\nx = 'y'"}, [])]),
        (
            '[f(s="line\\nnext\\ttab \\u00e9 \\U0001F600 \\\\ \\d")]',
            [("f", {"s": "line\nnext\ttab é 😀 \\ \\d"}, [])],
        ),
        ('[f(s="raw\nnewline")]', [("f", {"s": "raw\nnewline"}, [])]),
    ],
)
def test_call_lists(text: str, expected: list[tuple[str, dict[str, Any], list[Any]]]) -> None:
    assert read_list(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "[f]",
        "[f(]",
        "[f(a=1]",
        "[f(a=1) g()]",
        "[f(a=1)] extra",
        "[f(a==1)]",
        "[f(a=1, a=2)]",
        "[f(a=1, 2)]",
        "[f(a=x)]",
        "[f(a=g(1))]",
        '[f(a="unterminated)]',
        "[f(a=[1, 2)]",
        "[f(a={1 2})]",
        "[f(a={[1]: 2})]",
        "[1, 2]",
        "[" + "f(a=" + "[" * 5000 + "]" * 5000 + ")]",
    ],
)
def test_not_call_lists(text: str) -> None:
    assert parse_call_list(text) is None


def test_bare_call_and_its_argument_text() -> None:
    call = parse_call('brave_search.call(query="say \\"hi\\"")')
    assert call is not None
    assert (call.name, call.kwargs) == ("brave_search.call", {"query": 'say "hi"'})
    assert call.raw_args == 'query="say \\"hi\\""'
    assert parse_call("f(1) + 2") is None
    assert parse_call("print('x'); print('y')") is None
