"""Meta's published Llama 4 prompt examples (llama-models' prompt_format.md, with their token
ids; tests/conformance/data/llama-doc-prompts.json): chatlane's tokenizer reads every one
token for token, and the meta profile renders the text-only ones from their messages."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from chatlane.formats.llama4 import Llama4
from chatlane.formats.llama4.tokenizer import SPECIAL_TOKENS, load_tokenizer
from chatlane.messages import system, user
from chatlane.request import ChatRequest
from chatlane.tools import Tool

DATA = Path(__file__).parent / "data" / "llama-doc-prompts.json"
CASES = {
    c["id"]: c for c in json.loads(DATA.read_text("utf-8"))["cases"] if c["format"] == "llama4"
}
_CONTROL = re.compile(r"(<\|[A-Za-z0-9_]+\|>)")


def _tokens(text: str) -> list[int]:
    # The text with its control tokens' spellings read as control tokens (these are
    # Meta's rendered prompts), the rest tokenized piece by piece between them.
    tokenizer = load_tokenizer()
    out: list[int] = []
    for part in _CONTROL.split(text):
        if part in SPECIAL_TOKENS:
            out.append(SPECIAL_TOKENS[part])
        elif part:
            out += tokenizer.encode(part)
    return out


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_the_tokenizer_reads_meta_s_examples_token_for_token(case_id: str) -> None:
    case = CASES[case_id]
    assert _tokens(case["expected_prompt"]) == case["expected_token_ids"]


WEATHER = Tool.from_schema(
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

RENDERED: dict[str, Any] = {
    "doc_llama4_00": ChatRequest(
        (system("You are a helpful assistant"), user("Answer who are you in the form of jeopardy?"))
    ),
    "doc_llama4_04": ChatRequest(
        (user("What is the weather in SF and Seattle?"),), tools=(WEATHER,)
    ),
}


@pytest.mark.parametrize("case_id", sorted(RENDERED))
def test_the_meta_profile_renders_meta_s_examples(case_id: str) -> None:
    case = CASES[case_id]
    prompt = Llama4().render(RENDERED[case_id])
    assert prompt.text == case["expected_prompt"]
    assert list(prompt.tokens) == case["expected_token_ids"]
