"""``chatlane run`` and ``chat`` with ``--tool``: the agent loop runs the model's tool calls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_cli import CLI, assert_one_line_error, fake


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    return CLI(tmp_path)


def test_run_with_a_tool_streams_the_answer_notes_the_run_and_logs_every_step(cli: CLI) -> None:
    result = cli(
        "run", "Weather in Oslo?", "--backend", fake("weather_agent"), "--tool", fake("get_weather")
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Let me look.\nThe tool says: 21 degrees and sunny in Oslo\n"
    assert result.stderr.splitlines() == [
        '[calling get_weather({"city": "Oslo"})]',
        "[get_weather ok: 21 degrees and sunny in Oslo]",
    ]
    calls = cli.logs_json("show", "last")["calls"]
    assert [c["response"]["finish_reason"] for c in calls] == ["tool_calls", "stop"]
    [run] = calls[0]["tool_runs"]
    assert (run["name"], run["arguments"], run["result"], run["error"]) == (
        "get_weather",
        '{"city": "Oslo"}',
        "21 degrees and sunny in Oslo",
        None,
    )
    assert [m["role"] for m in calls[1]["request"]["messages"]] == ["user", "assistant", "tool"]
    assert calls[0]["request"]["tools"][0]["function"]["name"] == "get_weather"


def test_run_json_reports_steps_and_tool_runs(cli: CLI) -> None:
    body = json.loads(
        cli.ok(
            "run",
            "Weather in Rome?",
            "--json",
            "--backend",
            fake("weather_agent"),
            "--tool",
            fake("get_weather"),
        )
    )
    assert body["text"] == "The tool says: 21 degrees and sunny in Rome"
    assert body["steps"] == 2
    assert body["stop_reason"] == "answered"
    assert body["tool_runs"] == [
        {
            "name": "get_weather",
            "arguments": {"city": "Rome"},
            "status": "ok",
            "result": "21 degrees and sunny in Rome",
        }
    ]
    assert body["usage"]["total_tokens"] > 0


def test_a_failing_tool_is_reported_to_the_model_and_logged(cli: CLI) -> None:
    (cli.home / "station.py").write_text(
        "def get_weather(city: str) -> str:\n"
        '    """Look up the weather.\n\n    Args:\n        city: The city.\n    """\n'
        "    raise RuntimeError('station offline')\n"
    )
    result = cli(
        "run",
        "Weather in Oslo?",
        "--backend",
        fake("weather_agent"),
        "--tool",
        "station.py:get_weather",
    )
    assert result.returncode == 0, result.stderr
    assert "station offline" in result.stdout  # what the model was told, and answered with
    assert "[get_weather error:" in result.stderr
    [run] = cli.logs_json("show", "last")["calls"][0]["tool_runs"]
    assert "station offline" in run["error"]


def test_a_tool_continues_a_logged_conversation(cli: CLI) -> None:
    cli.ok(
        "run", "Weather in Oslo?", "--backend", fake("weather_agent"), "--tool", fake("get_weather")
    )
    cli.ok(
        "run",
        "And in Bergen?",
        "-c",
        "last",
        "--backend",
        fake("weather_agent"),
        "--tool",
        fake("get_weather"),
    )
    calls = cli.logs_json("show", "last")["calls"]
    assert len(calls) == 4
    assert [m["content"] for m in calls[2]["request"]["messages"] if m["role"] == "user"] == [
        "Weather in Oslo?",
        "And in Bergen?",
    ]


def test_tool_usage_errors(cli: CLI) -> None:
    (cli.home / "tools.py").write_text("NUMBER = 3\n\ndef untyped(x):\n    return x\n")
    base = ("run", "x", "--backend", fake("weather_agent"))
    assert_one_line_error(cli(*base, "--tool", "tools.py:NUMBER"), 2, "is a int, not a function")
    assert_one_line_error(cli(*base, "--tool", "tools.py:untyped"), 2, "has no type hint")


def test_chat_lists_its_tools_and_runs_them(cli: CLI) -> None:
    out = cli.ok(
        "chat",
        "--backend",
        fake("weather_agent"),
        "--tool",
        fake("get_weather"),
        input="/tools\nWeather in Lima?\n/exit\n",
    )
    lines = out.splitlines()
    assert lines[1] == "get_weather: Look up the current weather."
    assert '[calling get_weather({"city": "Lima"})]' in lines
    assert "The tool says: 21 degrees and sunny in Lima" in lines
