"""``make demo``: an agent-style conversation on the embedded llama.cpp engine.

It prints the exact prompt chatlane renders, streams the model's output, forces a tool call
(constrained decoding: the call always parses and its arguments always validate), runs the
tool, and streams the model's answer to the tool's result.

By default it runs chatlane's built-in demo model, which has *random weights* (built on first
use, about 17 MB, no download): its words are noise, but every mechanism is real. With
``CHATLANE_MODEL=/path/to/model.gguf`` the same conversation runs on a real model.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Literal, TextIO

from pydantic import Field

from chatlane.errors import ChatlaneError
from chatlane.events import Finished, TextDelta, ToolCallDelta, ToolCallDone, ToolCallStarted
from chatlane.messages import Message, assistant, system, tool_result, user
from chatlane.tools import tool


@tool
def get_weather(
    city: Annotated[str, Field(max_length=24)],
    unit: Literal["celsius", "fahrenheit"] = "celsius",
) -> dict[str, object]:
    """Look up the current weather in a city.

    Args:
        city: The city's name.
        unit: The temperature unit.
    """
    celsius = 10 + sum(map(ord, city)) % 20  # a made-up but stable reading
    temperature = celsius if unit == "celsius" else round(celsius * 9 / 5 + 32)
    return {"city": city, "temperature": temperature, "unit": unit, "sky": "clear"}


def _rule(out: TextIO, title: str) -> None:
    out.write(f"\n── {title} " + "─" * max(0, 68 - len(title)) + "\n")


def _stream_turn(out: TextIO, stream: object) -> None:
    from chatlane.backends.base import ChatStream

    assert isinstance(stream, ChatStream)
    with stream:
        for event in stream:
            if isinstance(event, TextDelta):
                out.write(event.text)
            elif isinstance(event, ToolCallStarted):
                out.write(f"[tool call {event.index} started: {event.name}, id {event.id}]\n")
            elif isinstance(event, ToolCallDelta):
                out.write(event.arguments)
            elif isinstance(event, ToolCallDone):
                out.write(f"\n[tool call {event.index} done]")
            elif isinstance(event, Finished):
                out.write(
                    f"\n[finished: {event.finish_reason}, stop token {event.stop_sequence}]\n"
                )
            out.flush()


def run(out: TextIO = sys.stdout) -> int:
    """Run the demo, writing to ``out``; returns the process exit code."""
    try:
        return _run(out)
    except ChatlaneError as e:
        out.write(f"\nchatlane demo failed: {e}\n")
        return 1


def _run(out: TextIO) -> int:
    from chatlane.backends.llamacpp import LlamaCpp

    path = os.environ.get("CHATLANE_MODEL")
    demo_model = not path
    if demo_model:
        from chatlane import formats
        from chatlane.testing import tiny_gguf

        out.write("chatlane demo on the embedded llama.cpp engine\n")
        out.write(
            "The built-in demo model has RANDOM WEIGHTS (a real model's tokenizer, a tiny\n"
            "random network): what it writes is noise. The prompt, the streaming, the\n"
            "constrained tool call and its round trip are real. For a real model run\n"
            "CHATLANE_MODEL=/path/to/model.gguf make demo\n"
        )
        out.write("Making or reusing the demo model... ")
        out.flush()
        model_path = str(tiny_gguf(formats.DEFAULT))
        out.write(f"{model_path}\n")
    else:
        model_path = str(path)
        out.write(f"chatlane demo on the embedded llama.cpp engine with {model_path}\n")

    with LlamaCpp(model_path, n_ctx=4096) as engine:
        out.write(
            f"Model: {engine.model} ({engine.info.architecture}), format: {engine.format.name}\n"
        )
        conversation: list[Message] = [
            system("You are a helpful assistant. Use the tools you are given."),
            user("What's the weather in Heidelberg right now?"),
        ]
        # The demo model needs short turns; a real model gets room to answer.
        answer_tokens = 48 if demo_model else 400
        settings = {"tools": [get_weather], "seed": 42}

        prompt = engine.render(conversation, **settings)
        _rule(out, f"the exact prompt ({len(prompt.tokens)} tokens, handed to llama.cpp as ids)")
        out.write(prompt.text + "\n")

        _rule(out, "model turn 1: a forced call of get_weather (constrained decoding)")
        stream = engine.stream(conversation, tool_choice="get_weather", max_tokens=200, **settings)
        _stream_turn(out, stream)
        response = stream.response
        conversation.append(assistant(response.text, response.tool_calls))
        for call in response.tool_calls:
            arguments = get_weather.validate_arguments(call.arguments)
            result = get_weather(**dict(arguments))
            out.write(f"[parsed: {call.name}({call.raw_arguments}) -> ran it -> {result}]\n")
            conversation.append(tool_result(call, result))

        rendered = engine.render(conversation, **settings)
        _rule(out, "the tool result, as the prompt now ends")
        out.write(rendered.text[len(prompt.text) :] + "\n")

        _rule(out, "model turn 2: the answer, streamed token by token")
        stream = engine.stream(conversation, max_tokens=answer_tokens, **settings)
        _stream_turn(out, stream)
        usage = stream.response.usage
        if usage is not None:
            out.write(
                f"[usage: {usage.prompt_tokens} prompt + {usage.completion_tokens} "
                f"completion tokens]\n"
            )
        if demo_model:
            out.write("\n(Random weights: the words above are noise; the machinery is not.)\n")
    return 0
