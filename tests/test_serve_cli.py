"""``chatlane serve`` as a user starts it: a subprocess on a free port in front of a scripted
raw Llama 3 server, answering the openai client; its options, models file and errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from chatlane.store import Store
from serve_support import completion_reply
from support import ScriptedServer, free_port


def _env(tmp_path: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATLANE_", "OPENAI_"))}
    env.update(
        HOME=str(tmp_path),
        CHATLANE_CONFIG=str(tmp_path / "none.toml"),
        CHATLANE_DB=str(tmp_path / "logs.db"),
        **more,
    )
    return env


@contextmanager
def _serve(args: list[str], env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "chatlane", "serve", "--port", str(port), *args],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()  # the ready line, once it listens
        assert line.startswith("chatlane serve: "), line + process.stderr.read()
        yield line, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(15)
        if process.stderr is not None:
            process.stderr.close()


def test_serve_answers_the_openai_client_and_logs(tmp_path: Path) -> None:
    with ScriptedServer() as raw:
        raw.route("/v1/completions", completion_reply(["Hello", " from the raw server."]))
        env = _env(tmp_path, CHATLANE_SERVE_KEYS="sk-one, sk-two")
        args = [
            "--completion-url",
            raw.url + "/v1",
            "--format",
            "llama3.1",
            "--served-model",
            "llama",
        ]
        with _serve(args, env) as (line, process):
            url = line.split()[2]
            client: Any = openai.OpenAI(base_url=url, api_key="sk-two", max_retries=0)
            answer = client.chat.completions.create(
                model="llama", messages=[{"role": "user", "content": "Hi"}]
            )
            health = httpx.get(url.removesuffix("/v1") + "/health")
            refused = httpx.get(url + "/models", headers={"Authorization": "Bearer sk-three"})
            client.close()
            process.send_signal(signal.SIGINT)
            assert process.wait(15) == 0
    assert url == f"http://127.0.0.1:{url.rsplit(':', 1)[1]}"
    assert "with API keys" in line
    assert "sk-" not in line
    assert answer.choices[0].message.content == "Hello from the raw server."
    assert health.json()["status"] == "ok"
    assert refused.status_code == 401
    with Store(tmp_path / "logs.db") as store:
        [summary] = store.conversations()
        [call] = store.conversation(summary.id).calls
    assert call.response is not None
    assert call.response.text == "Hello from the raw server."
    assert summary.backend is not None
    assert summary.backend.startswith("CompletionChat http://127.0.0.1:")


def test_a_models_file_serves_several_models(tmp_path: Path) -> None:
    with ScriptedServer() as one, ScriptedServer() as two:
        one.route("/v1/completions", completion_reply(["from one"]))
        two.route("/v1/completions", completion_reply(["from two"]))
        models = tmp_path / "models.toml"
        models.write_text(
            f'[models.first]\ncompletion_url = "{one.url}/v1"\nformat = "llama3.1"\nmodel = "upstream-a"\n\n'
            f'[models."second-model"]\ncompletion_url = "{two.url}/v1"\n'
        )
        with _serve(["--models", str(models), "--no-log"], _env(tmp_path)) as (line, _):
            url = line.split()[2]
            client: Any = openai.OpenAI(base_url=url, api_key="k", max_retries=0)
            listed = [m.id for m in client.models.list().data]
            answers = [
                client.chat.completions.create(model=m, messages=[{"role": "user", "content": "x"}])
                .choices[0]
                .message.content
                for m in ("second-model", "first")
            ]
            client.close()
        sent = one.requests[0].json()
    assert listed == ["first", "second-model"]
    assert answers == ["from two", "from one"]
    assert sent["model"] == "upstream-a"  # the upstream is asked for its own name
    assert "not logging" in line
    assert not (tmp_path / "logs.db").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[models.a]\nflavour = 'x'\n", "unknown setting 'flavour'"),
        ("[other]\n", "needs [models.NAME] tables"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_a_bad_models_file_is_a_usage_error(tmp_path: Path, content: str, message: str) -> None:
    models = tmp_path / "models.toml"
    models.write_text(content)
    done = subprocess.run(
        [sys.executable, "-m", "chatlane", "serve", "--models", str(models)],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert message in done.stderr


def test_no_backend_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "chatlane", "serve", "--port", str(free_port())],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no backend" in done.stderr
