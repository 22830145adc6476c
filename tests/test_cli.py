"""The ``chatlane`` command, driven as a user drives it: a subprocess with stdin and stdout."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

FAKES = Path(__file__).with_name("cli_fakes.py")


def fake(name: str) -> str:
    return f"{FAKES}:{name}"


class CLI:
    """Runs ``python -m chatlane`` in a clean environment with its own log and config."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.db = home / "log.db"
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("CHATLANE_", "OPENAI_"))
        }
        self.env.update(
            CHATLANE_DB=str(self.db),
            CHATLANE_CONFIG=str(home / "config.toml"),
            XDG_DATA_HOME=str(home / "data"),
            HOME=str(home),
            COLUMNS="100",
        )

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "chatlane", *args],
            input=input,
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            cwd=self.home,
            timeout=timeout,
        )

    def ok(self, *args: str, **kwargs: object) -> str:
        result = self(*args, **kwargs)  # type: ignore[arg-type]
        assert result.returncode == 0, result.stderr
        return result.stdout

    def logs_json(self, *args: str) -> Any:
        return json.loads(self.ok("logs", *args, "--json"))


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    return CLI(tmp_path)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert text in lines[-1], result.stderr
    assert lines[-1].startswith("chatlane")


# ---- help


@pytest.mark.parametrize(
    "command", [(), ("chat",), ("run",), ("render",), ("parse",), ("logs",), ("batch",), ("demo",)]
)
def test_every_command_has_help(cli: CLI, command: Sequence[str]) -> None:
    out = cli.ok(*command, "--help")
    assert out.startswith("usage: chatlane")
    assert "--debug" in out or not command


def test_help_loads_no_heavy_dependency_and_no_command_code() -> None:
    code = (
        "import sys, json\n"
        "from chatlane.cli import main\n"
        "for argv in (['--help'], ['run', '--help'], ['batch', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = ('httpx', 'pydantic', 'tiktoken', 'llama_cpp', 'rich', 'jinja2', 'sqlite3', 'asyncio')\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in heavy]\n"
        "loaded += [m for m in sys.modules if m.startswith(('chatlane.store', 'chatlane.batch', 'chatlane.backends'))]\n"
        "sys.stderr.write(json.dumps(sorted(loaded)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stderr) == []


def test_version(cli: CLI) -> None:
    from chatlane._version import __version__

    assert cli.ok("--version").strip() == f"chatlane {__version__}"


# ---- run


def test_run_streams_the_answer_and_logs_it(cli: CLI) -> None:
    out = cli.ok("run", "Hello there", "--backend", fake("echo"), "--system", "be brief")
    assert out == "[be brief] echo: Hello there\n"
    [summary] = cli.logs_json()
    assert summary["model"] == "echo-1"
    assert summary["backend"] == fake("echo")
    shown = cli.logs_json("show", summary["id"])
    [call] = shown["calls"]
    assert [m["content"] for m in call["request"]["messages"]] == ["be brief", "Hello there"]
    assert call["response"]["message"]["content"] == "[be brief] echo: Hello there"
    assert call["response"]["usage"]["total_tokens"] == 9
    assert call["duration_ms"] >= 0


def test_run_reads_the_prompt_from_stdin(cli: CLI) -> None:
    out = cli.ok("run", "-", "--backend", fake("echo"), input="line one\nline two\n")
    assert out == "echo: line one\nline two\n"


def test_run_json_is_machine_readable(cli: CLI) -> None:
    body = json.loads(cli.ok("run", "hi", "--json", "--backend", fake("counted")))
    assert body["text"] == "counted"
    assert body["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert body["tool_calls"] == []
    [summary] = cli.logs_json()
    assert body["conversation_id"] == summary["id"]


def test_run_continue_sends_the_history(cli: CLI) -> None:
    assert cli.ok("run", "first", "--backend", fake("turns")) == "turn 1: first\n"
    assert cli.ok("run", "second", "-c", "last", "--backend", fake("turns")) == "turn 2: second\n"
    [summary] = cli.logs_json()
    cid = summary["id"]
    assert summary["calls"] == 2
    assert cli.ok("run", "third", "-c", cid[:12], "--backend", fake("turns")) == "turn 3: third\n"
    shown = cli.ok("logs", "show", cid)
    assert shown.count("--- call") == 3
    assert "user: third\nassistant: turn 3: third" in shown
    assert shown.count("user: first") == 1  # history is shown once, not per call


def test_structured_output_from_a_schema_file(cli: CLI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["name", "population"],
    }
    (cli.home / "city.json").write_text(json.dumps(schema))
    body = json.loads(
        cli.ok("run", "a city", "--schema", "city.json", "--json", "--backend", fake("city"))
    )
    assert body["parsed"] == {"name": "Heidelberg", "population": 160000}
    [call] = cli.logs_json("show", "last")["calls"]
    assert call["request"]["response_format"]["json_schema"]["schema"] == schema


def test_structured_output_from_a_pydantic_model(cli: CLI) -> None:
    (cli.home / "models.py").write_text(
        "from pydantic import BaseModel\n\n"
        "class City(BaseModel):\n    name: str\n    population: int\n\n"
        "class Country(BaseModel):\n    capital: str\n"
    )
    body = json.loads(
        cli.ok("run", "x", "--schema", "models:City", "--json", "--backend", fake("city"))
    )
    assert body["parsed"] == {"name": "Heidelberg", "population": 160000}
    result = cli("run", "x", "--schema", "models.py:Country", "--backend", fake("city"))
    assert_one_line_error(result, 1, "does not validate as Country")
    assert result.stdout.startswith('{"name": "Heidelberg"')  # the answer is not lost
    result = cli("run", "x", "--schema", "models.py:Country", "--json", "--backend", fake("city"))
    assert_one_line_error(result, 1, "does not validate as Country")
    body = json.loads(result.stdout)
    assert body["parsed"] is None
    assert body["text"] == '{"name": "Heidelberg", "population": 160000}'
    assert "Country" in body["parse_error"]


def test_a_broken_stream_keeps_the_partial_answer(cli: CLI) -> None:
    result = cli("run", "x", "--backend", fake("broken"))
    assert result.stdout == "Half an ans\n"
    assert_one_line_error(result, 1, "connection reset by peer")
    [call] = cli.logs_json("show", "last")["calls"]
    assert call["response"]["message"]["content"] == "Half an ans"
    assert call["response"]["finish_reason"] == "incomplete"
    assert "StreamInterrupted" in call["error"]


def test_debug_shows_the_traceback(cli: CLI) -> None:
    result = cli("run", "x", "--backend", fake("broken"), "--debug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "StreamInterrupted" in result.stderr


def test_log_off_and_no_log_record_nothing(cli: CLI) -> None:
    cli.ok("run", "x", "--backend", fake("echo"), env={"CHATLANE_LOG": "off"})
    cli.ok("run", "x", "--backend", fake("echo"), "--no-log")
    assert not cli.db.exists()
    cli.ok("run", "x", "--backend", fake("echo"), "--db", str(cli.home / "other.db"))
    assert (cli.home / "other.db").exists()
    assert not cli.db.exists()


# ---- choosing the backend


def test_config_file_then_environment_then_options(cli: CLI) -> None:
    (cli.home / "config.toml").write_text(f'backend = "{fake("echo")}"\nmodel = "from-config"\n')
    assert cli.ok("run", "a") == "echo: a\n"
    assert cli.ok("run", "a", env={"CHATLANE_BACKEND": fake("turns")}) == "turn 1: a\n"
    out = cli.ok("run", "a", "--backend", fake("counted"), env={"CHATLANE_BACKEND": fake("turns")})
    assert out == "counted\n"
    body = cli.logs_json("show", "last")
    assert body["calls"][0]["request"]["model"] == "from-config"
    # The kind of backend is chosen by one level: an option is not mixed with the environment.
    env = {"CHATLANE_BASE_URL": "http://127.0.0.1:9/v1", "CHATLANE_GGUF": "x.gguf"}
    assert cli.ok("run", "b", "--backend", fake("echo"), env=env) == "echo: b\n"
    assert_one_line_error(
        cli("run", "b", env=env), 2, "CHATLANE_BASE_URL and CHATLANE_GGUF were both given"
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("backend = [1", "is not valid TOML"),
        ('colour = "blue"', "unknown setting 'colour'"),
        ("model = 3", "model must be a string"),
    ],
)
def test_a_bad_config_file_is_a_usage_error(cli: CLI, config: str, message: str) -> None:
    (cli.home / "config.toml").write_text(config + "\n")
    assert_one_line_error(cli("run", "x"), 2, message)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "no backend: give --base-url"),
        (("--backend", "nonsense"), "must look like module:name"),
        (("--backend", "no_such_module_xyz:f"), "no module named 'no_such_module_xyz'"),
        (("--backend", fake("nothing_here")), "has no 'nothing_here'"),
        (("--backend", fake("not_a_backend")), "gave a int, not a chatlane Backend"),
        (("--backend", "missing.py:f"), "no file 'missing.py'"),
        (("--backend", fake("echo"), "--gguf", "m.gguf"), "choose one backend"),
        (("--backend", fake("echo"), "--schema", "nope.json"), "cannot read 'nope.json'"),
        (("--backend", fake("echo"), "--tool", "no_tools_here:f"), "no module named"),
        (("--backend", fake("echo"), "-c", "zzzz"), "no conversation 'zzzz'"),
    ],
)
def test_usage_errors_are_one_line_with_status_2(
    cli: CLI, args: Sequence[str], message: str
) -> None:
    assert_one_line_error(cli("run", "x", *args), 2, message)


def test_argparse_errors_have_status_2(cli: CLI) -> None:
    result = cli("run")
    assert result.returncode == 2
    assert "the following arguments are required: PROMPT" in result.stderr
    assert cli("frobnicate").returncode == 2


def test_a_backend_whose_code_fails_is_a_runtime_error(cli: CLI) -> None:
    (cli.home / "bad.py").write_text("raise RuntimeError('no GPU found')\n")
    assert_one_line_error(cli("run", "x", "--backend", "bad.py:f"), 1, "no GPU found")


def test_an_api_key_from_the_environment_is_never_logged(cli: CLI) -> None:
    secret = "sk-test-0123456789abcdef"
    (cli.home / "keyed.py").write_text(
        "import os\n"
        "from chatlane.backends.fake import Fake\n"
        "def backend():\n"
        "    key = os.environ['CHATLANE_API_KEY']\n"
        "    return Fake([lambda r: 'ok'], model='keyed')\n"
    )
    cli.ok("run", "x", "--backend", "keyed.py:backend", env={"CHATLANE_API_KEY": secret})
    data = b"".join(p.read_bytes() for p in cli.home.glob("log.db*"))
    assert b"keyed" in data
    assert secret.encode() not in data


# ---- logs


def test_logs_list_search_show(cli: CLI) -> None:
    cli.ok("run", "Tell me about rivers", "--backend", fake("echo"))
    cli.ok("run", "And mountains?", "--backend", fake("echo"))
    listing = cli.ok("logs")
    assert listing.splitlines()[0].split() == [
        "ID", "UPDATED", "MODEL", "CALLS", "TOKENS", "CACHED", "TITLE",
    ]  # fmt: skip
    assert "And mountains?" in listing.splitlines()[1]
    assert "Tell me about rivers" in listing.splitlines()[2]
    assert cli.ok("logs", "list", "-n", "1").count("\n") == 2
    found = cli.ok("logs", "search", "RIVERS")
    assert "rivers" in found
    assert "mountains" not in found
    assert cli.ok("logs", "search", "volcanoes") == "no match\n"
    shown = cli.ok("logs", "show", "last")
    assert "user: And mountains?\nassistant: echo: And mountains?\n" in shown
    assert cli.ok("logs", "path").strip() == str(cli.db)


def test_logs_errors(cli: CLI) -> None:
    assert_one_line_error(cli("logs"), 2, "no log at")
    cli.ok("run", "x", "--backend", fake("echo"))
    assert_one_line_error(cli("logs", "show", "zzzz"), 2, "no conversation 'zzzz'")


# ---- batch


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_batch_answers_every_line_and_reports_failures(cli: CLI) -> None:
    rows = [
        {
            "id": f"q{i}",
            "messages": [{"role": "user", "content": f"{'fail' if i == 3 else 'go'} {i}"}],
        }
        for i in range(6)
    ]
    write_jsonl(cli.home / "in.jsonl", rows)
    result = cli("batch", "in.jsonl", "-o", "out.jsonl", "-j", "2", "--backend", fake("flaky"))
    assert result.returncode == 1
    assert "5 answered, 1 failed, 0 already done" in result.stderr
    assert "done, 1 failed" in result.stderr  # the progress line
    got = {r["id"]: r for r in map(json.loads, (cli.home / "out.jsonl").read_text().splitlines())}
    assert got["q3"]["error"]["type"] == "RateLimited"
    assert got["q3"]["error"]["status_code"] == 429
    assert got["q0"]["response"]["message"]["content"] == "ok: go 0"
    assert len(got) == 6
    # Again: nothing to do. With --retry-failed: only q3 runs (and fails again).
    again = cli("batch", "in.jsonl", "-o", "out.jsonl", "--backend", fake("flaky"))
    assert again.returncode == 0
    assert "0 answered, 0 failed, 6 already done" in again.stderr
    retry = cli(
        "batch", "in.jsonl", "-o", "out.jsonl", "--retry-failed", "--backend", fake("flaky")
    )
    assert "0 answered, 1 failed, 5 already done" in retry.stderr
    # Every call was logged, with its batch item.
    assert "batch item q" in cli.ok("logs", "show", "last")
    db = sqlite3.connect(cli.db)
    assert db.execute("SELECT count(*) FROM calls").fetchone()[0] == 7
    db.close()


def test_batch_usage_errors(cli: CLI) -> None:
    write_jsonl(
        cli.home / "in.jsonl", [{"id": "a", "messages": [{"role": "user", "content": "x"}]}] * 2
    )
    assert_one_line_error(
        cli("batch", "in.jsonl", "-o", "o.jsonl", "--backend", fake("echo")), 1, "share the id 'a'"
    )
    assert_one_line_error(cli("batch", "nope.jsonl", "-o", "o.jsonl"), 2, "no such file")
    assert_one_line_error(cli("batch", "in.jsonl", "-o", "in.jsonl"), 2, "another file")
    assert_one_line_error(cli("batch", "in.jsonl", "-o", "o.jsonl", "-j", "0"), 2, "at least 1")


# ---- demo, render and parse


def test_demo_runs(cli: CLI) -> None:
    assert "chatlane demo" in cli.ok("demo")


def test_a_closed_pipe_ends_quietly(cli: CLI) -> None:
    (cli.home / "conv.json").write_text(
        json.dumps({"messages": [{"role": "user", "content": "word " * 20000}]})
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatlane", "render", "conv.json", "--tokens"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli.env,
        cwd=cli.home,
    )
    assert proc.stdout is not None
    proc.stdout.read(10)
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141
    assert err == b""


def test_logs_show_whether_the_prefix_cache_works(cli: CLI) -> None:
    cli.ok("run", "Cache me", "--backend", fake("cached_echo"))
    listing = cli.ok("logs").splitlines()
    assert listing[1].split()[5:7] == ["128", "112"]  # TOKENS, CACHED (UPDATED is two words)
    shown = cli.ok("logs", "show", "last")
    assert "120+8 tokens, 112 cached, 3 reasoning" in shown
    [row] = json.loads(cli.ok("logs", "--json"))
    assert (row["cached_tokens"], row["reasoning_tokens"]) == (112, 3)
