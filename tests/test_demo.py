"""`make demo` (``python -m chatlane demo``) on the embedded engine with the tiny model."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from chatlane.demo import get_weather, run

pytestmark = pytest.mark.engine


def test_the_demo_runs_a_constrained_tool_call_round_trip(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("chatlane.formats.llama3")
    monkeypatch.delenv("CHATLANE_MODEL", raising=False)
    out = io.StringIO()
    assert run(out) == 0
    text = out.getvalue()
    assert "RANDOM WEIGHTS" in text
    assert str(tiny_model) in text
    # The exact prompt, special tokens and all, before the model's turns.
    assert text.count("<|begin_of_text|>") == 1
    assert "What's the weather in Heidelberg right now?<|eot_id|>" in text
    # The forced call parsed, validated and ran; its result went back to the model.
    ran = re.search(r"\[parsed: get_weather\((\{.*\})\) -> ran it -> ", text)
    assert ran is not None, text
    arguments = json.loads(ran.group(1))
    get_weather.validate_arguments(arguments)
    assert "[finished: tool_calls" in text
    assert "model turn 2" in text
    assert "[usage: " in text


def test_a_missing_real_model_is_reported_plainly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATLANE_MODEL", str(tmp_path / "missing.gguf"))
    out = io.StringIO()
    assert run(out) == 1
    assert "chatlane demo failed: no model file at" in out.getvalue()
