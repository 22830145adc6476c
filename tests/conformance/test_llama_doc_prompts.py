"""Every example prompt of Meta's prompt_format.md pages for Llama 3.1, 3.2 and 3.3.

The data (tests/conformance/data/llama-doc-prompts.json) holds the examples' text and token
ids, not their inputs; each case below gives the chatlane conversation that expresses it.
The text must match byte for byte, the token ids token for token.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chatlane.formats.base import Prompt
from chatlane.formats.llama3 import Llama3
from chatlane.messages import Image, ToolCall, assistant, system, tool_result, user
from chatlane.request import ChatRequest
from chatlane.tools import Tool, brave_search, code_interpreter, wolfram_alpha

DATA = Path(__file__).parent / "data" / "llama-doc-prompts.json"
CASES: dict[str, dict[str, Any]] = {
    c["id"]: c for c in json.loads(DATA.read_text(encoding="utf-8"))["cases"]
}
# One pixel: the renderer writes <|image|> for any image.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
)

TRENDING_SONGS = Tool.from_schema(
    "trending_songs",
    {
        "type": "object",
        "properties": {
            "n": {"type": "int", "description": "The number of songs to return"},
            "genre": {"type": "str", "description": "The genre of the songs to return"},
        },
        "required": ["n"],
    },
    "Returns the trending songs on a Music site",
)
GET_WEATHER = Tool.from_schema(
    "get_weather",
    {
        "type": "object",
        "properties": {
            "city": {
                "type": "string",
                "description": "The name of the city to get the weather for",
            },
            "metric": {
                "type": "string",
                "description": "The metric for weather. Options are: celsius, fahrenheit",
                "default": "celsius",
            },
        },
        "required": ["city"],
    },
    "Get weather info for places",
)


def _tool_result_text(case_id: str) -> str:
    # The wolfram_alpha result of the full-interaction example, cut from the page itself.
    text = CASES[case_id]["expected_prompt"]
    start = text.index("<|start_header_id|>ipython<|end_header_id|>\n\n") + len(
        "<|start_header_id|>ipython<|end_header_id|>\n\n"
    )
    return str(text[start : text.index("<|eot_id|>", start)])


def completion(text: str, image: bool = False) -> Callable[[], Prompt]:
    def render() -> Prompt:
        content: list[Any] = [Image.from_bytes(PNG), text] if image else [text]
        return Llama3().render_completion(content if image else text)

    return render


def chat_case(version: str, messages: list[Any], **kwargs: Any) -> Callable[[], Prompt]:
    tools = kwargs.pop("tools", ())
    tool_choice = kwargs.pop("tool_choice", None)

    def render() -> Prompt:
        fmt = Llama3(version, **kwargs)  # type: ignore[arg-type]
        return fmt.render(ChatRequest(tuple(messages), tools=tools, tool_choice=tool_choice))

    return render


def builtin_search(version: str, day: int, vision: bool = False) -> Callable[[], Prompt]:
    return chat_case(
        version,
        [
            system("You are a helpful assistant."),
            user("Search the web for the latest price of 1oz gold?"),
        ],
        tools=(code_interpreter, brave_search, wolfram_alpha),
        date=dt.date(2024, 9, day),
        vision=vision,
    )


def builtin_full_interaction(version: str, case_id: str) -> Callable[[], Prompt]:
    call = ToolCall("tool_call_id", "wolfram_alpha", {"query": "100th decimal of pi"})
    return chat_case(
        version,
        [
            system("Environment: ipython\nTools: brave_search, wolfram_alpha\n"),
            user("What is the 100th decimal of pi?"),
            assistant("", [call]),
            tool_result(call, _tool_result_text(case_id)),
        ],
    )


def custom_tools(version: str, tool_format: str) -> Callable[[], Prompt]:
    return chat_case(
        version,
        [system("You are a helpful assistant."), user("Use tools to get latest trending songs")],
        tools=(TRENDING_SONGS,),
        date=dt.date(2024, 9, 21),
        tool_format=tool_format,
    )


def pythonic(version: str, question: str) -> Callable[[], Prompt]:
    return chat_case(version, [user(question)], tools=(GET_WEATHER,), tool_format="pythonic")


def user_only(version: str, case_id: str) -> Callable[[], Prompt]:
    # The "function calling with user message" examples: the user typed the tools in.
    text = CASES[case_id]["expected_prompt"]
    body = text[
        len("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n") : text.index(
            "<|eot_id|>"
        )
    ]
    return chat_case(version, [user(body)])


JEOPARDY = "Answer who are you in the form of jeopardy?"
PRIME_31 = "Write code to check if number is prime, use that to see if the number 7 is prime"
call_sf = ToolCall("c1", "get_weather", {"city": "San Francisco", "metric": "celsius"})

INPUTS: dict[str, Callable[[], Prompt]] = {
    "doc_llama3.1_00": completion("Color of sky is blue but sometimes can also be"),
    "doc_llama3.1_01": chat_case("3.1", [system("You are a helpful assistant"), user(JEOPARDY)]),
    "doc_llama3.1_02": builtin_search("3.1", 21),
    "doc_llama3.1_03": chat_case("3.1", [system("Environment: ipython"), user(PRIME_31)]),
    "doc_llama3.1_04": builtin_full_interaction("3.1", "doc_llama3.1_04"),
    "doc_llama3.1_05": custom_tools("3.1", "json"),
    "doc_llama3.1_06": custom_tools("3.1", "function_tag"),
    "doc_llama3.2_00": chat_case(
        "3.2", [system("You are a helpful assistant"), user("Who are you?")]
    ),
    "doc_llama3.2_01": pythonic("3.2", "What is the weather in SF and Seattle?"),
    "doc_llama3.2_02": user_only("3.2", "doc_llama3.2_02"),
    "doc_llama3.2_03": chat_case(
        "3.2",
        [user("Write code to check if number is prime. Use it to verify if number 7 is prime")],
        tools=(code_interpreter,),
        date=dt.date(2024, 9, 24),
    ),
    "doc_llama3.2_04": chat_case(
        "3.2",
        [
            user("What is the weather in SF?"),
            assistant("", [call_sf]),
            tool_result(call_sf, '"25 C"'),
        ],
        tools=(GET_WEATHER,),
        tool_format="pythonic",
    ),
    "doc_llama3.2_05": completion("The color of the sky is blue but sometimes it can also be"),
    "doc_llama3.2-vision_00": chat_case(
        "3.2", [system("You are a helpful assistant"), user("Who are you?")], vision=True
    ),
    "doc_llama3.2-vision_01": chat_case(
        "3.2", [user([Image.from_bytes(PNG), "Describe this image in two sentences"])], vision=True
    ),
    "doc_llama3.2-vision_02": builtin_search("3.2", 23, vision=True),
    "doc_llama3.2-vision_03": completion(
        "The color of the sky is blue but sometimes it can also be"
    ),
    "doc_llama3.2-vision_04": completion("If I had to write a haiku for this one", image=True),
    "doc_llama3.3_00": completion("Color of sky is blue but sometimes can also be"),
    "doc_llama3.3_01": chat_case("3.3", [system("You are a helpful assistant"), user(JEOPARDY)]),
    "doc_llama3.3_02": pythonic("3.3", "What is the weather in SF and Seattle?"),
    "doc_llama3.3_03": user_only("3.3", "doc_llama3.3_03"),
    "doc_llama3.3_04": builtin_search("3.3", 21),
    "doc_llama3.3_05": chat_case("3.3", [system("Environment: ipython"), user(PRIME_31)]),
    "doc_llama3.3_06": builtin_full_interaction("3.3", "doc_llama3.3_06"),
    "doc_llama3.3_07": custom_tools("3.3", "json"),
    "doc_llama3.3_08": custom_tools("3.3", "function_tag"),
}


# Where a page and Meta's code (llama-stack's prompt adapter and llama-models' ChatFormat,
# which test_llama3_oracles.py runs) disagree, the code wins; docs/llama3-format.md lists
# each of these with the page's text and the code's.
_DATE_LAYOUT = "the code writes no blank line after the date and none at the end of the system text"
_EMPTY_SYSTEM = "the code gives 3.2/3.3 an empty system turn when there is no system message"
_PYTHONIC = "the code's pythonic system prompt is newer than the page's"
_NO_DATE = "the code's 3.2/3.3 system turn has no date block"
_TAG = "the code writes <|python_tag|> before code_interpreter calls only"
DISAGREEMENTS: dict[str, str] = {
    "doc_llama3.1_01": _DATE_LAYOUT + "; the code always writes the date block",
    "doc_llama3.1_02": _DATE_LAYOUT,
    "doc_llama3.1_03": "the code always writes the date block (3.1)",
    "doc_llama3.1_04": "the code always writes the date block (3.1); " + _TAG,
    "doc_llama3.1_05": _DATE_LAYOUT,
    "doc_llama3.1_06": _DATE_LAYOUT,
    "doc_llama3.2_01": _PYTHONIC,
    "doc_llama3.2_02": _EMPTY_SYSTEM,
    "doc_llama3.2_03": _NO_DATE,
    "doc_llama3.2_04": _PYTHONIC + "; " + _TAG,
    "doc_llama3.2-vision_00": "the code always writes the date block (3.2 Vision takes 3.1's rules)",
    "doc_llama3.2-vision_01": "the code always writes a system turn with the date block (3.2 Vision)",
    "doc_llama3.2-vision_02": _DATE_LAYOUT,
    "doc_llama3.3_02": _PYTHONIC,
    "doc_llama3.3_03": _EMPTY_SYSTEM,
    "doc_llama3.3_04": _NO_DATE + " (3.3 takes 3.2's rules)",
    "doc_llama3.3_06": "the code writes the system text as given (3.3); " + _TAG,
    "doc_llama3.3_07": "3.3 takes 3.2's rules: no date block; JSON tools in 3.1's user turn",
    "doc_llama3.3_08": "3.3 takes 3.2's rules: no date block; function-tag tools in 3.1's user turn",
}
AGREEMENTS = sorted(set(INPUTS) - set(DISAGREEMENTS))


def test_every_llama3_example_has_an_input() -> None:
    llama3 = {k for k, c in CASES.items() if not c["format"].startswith("llama4")}
    assert set(INPUTS) == llama3
    assert set(DISAGREEMENTS) <= llama3


@pytest.mark.parametrize("case_id", AGREEMENTS)
def test_text_matches_the_page(case_id: str) -> None:
    assert INPUTS[case_id]().text == CASES[case_id]["expected_prompt"]


@pytest.mark.parametrize("case_id", AGREEMENTS)
def test_tokens_match_the_page(case_id: str) -> None:
    assert list(INPUTS[case_id]().tokens) == CASES[case_id]["expected_token_ids"]


@pytest.mark.parametrize("case_id", sorted(DISAGREEMENTS))
def test_the_listed_disagreements_are_real(case_id: str) -> None:
    # Each listed case renders otherwise than its page (the code's text, checked by the
    # oracles); a case that came to agree would leave this list.
    assert INPUTS[case_id]().text != CASES[case_id]["expected_prompt"]
