"""``make demo``: a short conversation that shows chatlane's event stream and tool calls.

Until the embedded engine is wired in, this runs on the scripted `Fake` backend and says so.
"""

from __future__ import annotations

import sys
from typing import TextIO

from chatlane.backends.fake import Fake
from chatlane.events import TextDelta, ToolCallDone, ToolCallStarted
from chatlane.messages import Message, ToolCall, assistant, system, tool_result, user
from chatlane.tools import tool


@tool
def get_weather(city: str, unit: str = "celsius") -> dict[str, object]:
    """Look up the current weather.

    Args:
        city: The city to look up.
        unit: "celsius" or "fahrenheit".
    """
    return {"city": city, "temperature": 21 if unit == "celsius" else 70, "unit": unit}


def run(out: TextIO = sys.stdout) -> int:
    call = ToolCall("call_1", "get_weather", {"city": "Heidelberg"})
    backend = Fake(
        [
            assistant("Let me check the weather.", [call]),
            "It is 21 °C in Heidelberg right now.",
        ]
    )
    out.write("chatlane demo: a scripted conversation on the Fake backend (no model runs).\n\n")
    conversation: list[Message] = [
        system("You are a helpful assistant."),
        user("What's the weather in Heidelberg?"),
    ]
    for step in range(2):
        out.write(f"--- model turn {step + 1} ---\n")
        with backend.stream(conversation, tools=[get_weather]) as stream:
            for event in stream:
                if isinstance(event, TextDelta):
                    out.write(event.text)
                    out.flush()
                elif isinstance(event, ToolCallStarted):
                    out.write(f"\n[tool call started: {event.name}]")
                elif isinstance(event, ToolCallDone):
                    out.write(f"\n[tool call done: {event.call.name}({event.call.raw_arguments})]")
            response = stream.response
        out.write(f"\n[finish: {response.finish_reason}, usage: {response.usage}]\n")
        conversation.append(assistant(response.text, response.tool_calls))
        for c in response.tool_calls:
            result = get_weather(**c.arguments)
            out.write(f"[ran {c.name} -> {result}]\n")
            conversation.append(tool_result(c, result))
        if not response.tool_calls:
            break
    return 0
