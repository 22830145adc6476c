"""The format seam holds: no module outside `chatlane.formats` names a prompt format, a
special token or a tokenizer, and the registry behaves as documented.

The leak check reads the source with `ast`: string constants (docstrings excepted, since
they may say what a family is) and identifiers, attributes and imports. A family added under
`formats/` needs no change here; knowledge of it anywhere else fails this test.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import chatlane
from chatlane import formats
from chatlane.errors import InputError
from chatlane.formats.base import ModelInfo, PromptFormat
from chatlane.wire.openai import decode_request
from test_cli import CLI

SRC = Path(chatlane.__file__).parent

# Special-token spellings of the families chatlane has or is adding.
SPECIAL_TOKEN = re.compile(
    r"<\|[^|<>\s]{1,40}\|>"  # <|eot_id|>, <|im_start|>, <|channel|>, ...
    r"|\[/?(?:INST|TOOL_CALLS|AVAILABLE_TOOLS|TOOL_RESULTS|SYSTEM_PROMPT|THINK)\]"
    r"|</?(?:tool_call|tool_response|think|function)\b[=>]?"
    r"|<(?:start|end)_of_turn>|</?s>"
)
# Family names used as format names (llama.cpp, the engine, is not a format).
FAMILY = re.compile(r"(?i)llama[-_ ]?\d|qwen|mistral|harmony|gpt[-_ ]?oss|gemma|deepseek|phi-?\d")
# Tokenizers: the libraries and the classes.
TOKENIZER = re.compile(
    r"(?i)tiktoken|sentencepiece|mistral_common|^tokenizers$|^transformers$"
    r"|(?-i:[A-Z]\w*Tokenizer)\b"
)
# Modules of `chatlane.formats` that everything may import: the registry and the protocol.
OPEN_FORMAT_MODULES = {"chatlane.formats", "chatlane.formats.base"}

# Justified exceptions, by module and the text found. Keep this short.
ALLOWED: dict[str, set[str]] = {
    # The public face re-exports the Llama 3 format class (`chatlane.Llama3(...)`), lazily:
    # users' code and the README construct it by name. It is a face, not a layer below one;
    # nothing that must work for every family goes through it.
    "__init__.py": {"Llama3", "chatlane.formats.llama3"},
    # `tiny_llama3_gguf()` is kept as a short alias of `tiny_gguf("llama3.1")` for the
    # many tests and users that build the Llama 3 test model; it names the family on purpose.
    # It also re-exports the test models' shared cache directory (`model_cache_dir`).
    "testing/__init__.py": {"tiny_llama3_gguf", "llama3.1", "chatlane.formats._testmodel"},
}


def _docstring_ids(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
        # An attribute docstring: a string right after an assignment in a class or module.
        for field in ("body", "orelse", "finalbody"):
            stmts = getattr(node, field, None)
            if not isinstance(stmts, list):
                continue
            for before, after in itertools.pairwise(stmts):
                if (
                    isinstance(before, ast.Assign | ast.AnnAssign)
                    and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)
                ):
                    ids.add(id(after.value))
    return ids


def _names(tree: ast.AST) -> Iterator[tuple[int, str, str]]:
    """(line, kind, text) of every string constant and identifier the code uses."""
    docstrings = _docstring_ids(tree)
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                yield line, "string", node.value
        elif isinstance(node, ast.Name):
            yield line, "name", node.id
        elif isinstance(node, ast.Attribute):
            yield line, "attribute", node.attr
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield line, "definition", node.name
        elif isinstance(node, ast.arg):
            yield line, "argument", node.arg
        elif isinstance(node, ast.keyword) and node.arg:
            yield line, "keyword", node.arg
        elif isinstance(node, ast.alias):
            yield line, "import", node.name
            if node.asname:
                yield line, "import", node.asname
        if isinstance(node, ast.ImportFrom) and node.module:
            yield line, "import", node.module


def _imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None))
            == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def leaks(source: str, module: str = "<test>") -> list[str]:
    """Every place in ``source`` that names a format, a special token or a tokenizer."""
    tree = ast.parse(source)
    allowed = ALLOWED.get(module, set())
    found: list[str] = []

    def report(line: int, kind: str, text: str, what: str, match: str) -> None:
        if match not in allowed and text not in allowed:
            found.append(f"{module}:{line}: {kind} {text!r} names {what} ({match!r})")

    for line, kind, text in _names(tree):
        checks = [
            (SPECIAL_TOKEN, "a special token"),
            (FAMILY, "a format"),
            (TOKENIZER, "a tokenizer"),
        ]
        if kind != "string":
            checks = checks[1:]
        for pattern, what in checks:
            m = pattern.search(text)
            if m is not None:
                report(line, kind, text, what, m.group())
    for line, name in _imported_modules(tree):
        if name.startswith("chatlane.formats.") and name not in OPEN_FORMAT_MODULES:
            report(line, "import", name, "a format's own module", name)
    return found


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "formats" not in p.relative_to(SRC).parts)


def test_no_module_outside_formats_names_a_format() -> None:
    found = [
        leak
        for path in _modules()
        for leak in leaks(path.read_text(encoding="utf-8"), path.relative_to(SRC).as_posix())
    ]
    assert not found, "format knowledge outside chatlane.formats:\n" + "\n".join(found)


def test_every_module_outside_formats_is_checked() -> None:
    checked = {p.relative_to(SRC).as_posix() for p in _modules()}
    assert {"backends/completion.py", "backends/llamacpp.py", "cli.py", "_config.py"} <= checked
    assert not any(name.startswith("formats/") for name in checked)
    assert set(ALLOWED) <= checked  # no allowance for a module that is gone


@pytest.mark.parametrize(
    "source",
    [
        'STOP = "<|eot_id|>"',
        'x = f"{a}[INST]{b}"',
        'x = "<tool_call>"',
        "x = '<|im_start|>'",
        'name = "llama3.1"',
        'DEFAULT = "qwen3"',
        'x = "gpt-oss"',
        "from chatlane.formats.llama3 import Llama3",
        "import chatlane.formats.llama3.tokenizer",
        "from chatlane.formats.llama3.parser import parse_output",
        "import tiktoken",
        "def f(tok: Llama3Tokenizer) -> None: ...",
        "fmt.llama3_profile = 1",
        "importlib.import_module('chatlane.formats.mistral')",
        "from chatlane.formats.qwen3.parser import Qwen3Parser",
    ],
)
def test_the_check_finds_each_kind_of_leak(source: str) -> None:
    assert leaks(source)


@pytest.mark.parametrize(
    "source",
    [
        '"""A docstring may say <|eot_id|> and llama3."""',
        'def f():\n    """Llama 3 wants <|eom_id|>."""',
        'x = 1\n"""An attribute docstring about qwen."""',
        "# a comment about <|eot_id|>\nx = 1",
        "from chatlane.formats.base import PromptFormat, Tokenizer",
        "from chatlane import formats\nfmt = formats.get(formats.DEFAULT)",
        'dialect = "llama.cpp"',
        "import llama_cpp\nfrom chatlane.backends.llamacpp import LlamaCpp",
        "tokens = fmt.tokenizer.encode(text)",
        'html = "<b>bold</b>"',
    ],
)
def test_the_check_lets_generic_code_pass(source: str) -> None:
    assert leaks(source) == []


# -- the registry --------------------------------------------------------------------------


def test_names_lists_every_format_and_the_default() -> None:
    names = formats.names()
    assert len(names) == len(set(names))
    assert formats.DEFAULT in names
    for name in names:
        fmt = formats.get(name)
        assert fmt.name.startswith(name.split(".")[0])
        assert formats.family(name).startswith("chatlane.formats.")


def test_an_unknown_name_is_a_clear_error() -> None:
    with pytest.raises(InputError, match=r"unknown prompt format 'no-such-format'.*knows"):
        formats.get("no-such-format")
    with pytest.raises(InputError, match="unknown prompt format"):
        formats.family("no-such-format")


def test_an_unknown_setting_is_a_clear_error() -> None:
    with pytest.raises(InputError, match=rf"format {formats.DEFAULT!r}.*no_such_setting"):
        formats.get(formats.DEFAULT, no_such_setting=1)


def test_register_refuses_a_taken_name() -> None:
    with pytest.raises(InputError, match="already registered"):
        formats.register("somewhere.else", (formats.DEFAULT,))
    assert formats.family(formats.DEFAULT) != "somewhere.else"


def _default_family_control_tokens() -> ModelInfo:
    """A GGUF-like ModelInfo whose vocabulary is the default format's own."""
    fmt = formats.get(formats.DEFAULT)
    tokenizer = fmt.tokenizer
    assert tokenizer is not None
    specials = dict(tokenizer.special_tokens)
    return ModelInfo(
        architecture="llama",
        name="Some Fine-Tune",
        chat_template="{{ bos_token }}...",
        control_token=specials.get,
        metadata={"general.architecture": "llama"},
    )


def test_detect_reads_a_gguf_vocabulary() -> None:
    info = _default_family_control_tokens()
    found = formats.detect(info)
    assert found is not None
    assert found.matches(info)
    assert found.stop_sequences == formats.get(formats.DEFAULT).stop_sequences


def test_detect_gives_none_for_an_unknown_vocabulary() -> None:
    info = ModelInfo(architecture="unknown", name="mystery", control_token=lambda text: None)
    assert formats.detect(info) is None
    assert formats.detect(ModelInfo()) is None
    assert formats.detect(ModelInfo(model_id="gpt-4o-mini")) is None


@pytest.mark.parametrize(
    ("model_id", "expected"),
    [
        ("meta-llama/Llama-3.2-3B-Instruct", "llama3.2"),
        ("meta-llama/Meta-Llama-3.1-8B-Instruct", "llama3.1"),
        ("llama-3.3-70b-versatile", "llama3.3"),
        ("Meta-Llama-3-8B-Instruct", "llama3.1"),
    ],
)
def test_detect_reads_a_served_model_id(model_id: str, expected: str) -> None:
    found = formats.detect(ModelInfo(model_id=model_id))
    assert found is not None
    assert found.name.startswith(expected), found.name


def test_detect_passes_settings_on() -> None:
    with pytest.raises(InputError, match="no_such_setting"):
        formats.detect(ModelInfo(model_id="meta-llama/Llama-3.2-3B-Instruct"), no_such_setting=1)


# -- everything goes through the registry ----------------------------------------------------

CONVERSATION = {
    "messages": [{"role": "user", "content": "Weather in Paris?"}],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ],
}


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    (tmp_path / "conv.json").write_text(json.dumps(CONVERSATION))
    return CLI(tmp_path)


@pytest.mark.parametrize("name", formats.names())
def test_cli_render_format_is_the_registered_format(cli: CLI, name: str) -> None:
    body = json.loads(cli.ok("render", "conv.json", "--format", name, "--json"))
    prompt = formats.get(name).render(decode_request(CONVERSATION))
    assert (body["text"], tuple(body["tokens"])) == (prompt.text, prompt.tokens)


@pytest.mark.parametrize("name", formats.names())
def test_cli_parse_format_is_the_registered_format(cli: CLI, name: str) -> None:
    fmt = formats.get(name)
    raw = "It is sunny in Paris."
    stop = fmt.stop_sequences[0]
    (cli.home / "raw.txt").write_text(raw + stop)
    body = json.loads(cli.ok("parse", "raw.txt", "--format", name, "--request", "conv.json"))
    parsed = fmt.parse(raw + stop, decode_request(CONVERSATION))
    assert body["content"] == parsed.content
    assert body["stop_sequence"] == parsed.stop_sequence == stop
    assert [c["name"] for c in body["tool_calls"]] == [c.name for c in parsed.tool_calls]


def test_completion_chat_detects_the_format_from_the_model_id() -> None:
    from chatlane.backends.completion import CompletionChat

    model = "meta-llama/Llama-3.2-3B-Instruct"
    detected = formats.detect(ModelInfo(model_id=model))
    assert detected is not None
    chat = CompletionChat("http://127.0.0.1:9/v1", model=model)
    assert chat.format.name == detected.name
    assert CompletionChat("http://127.0.0.1:9/v1").format.name == formats.get(formats.DEFAULT).name
    named = CompletionChat("http://127.0.0.1:9/v1", format=formats.names()[-1])
    assert named.format.name == formats.get(formats.names()[-1]).name
    with pytest.raises(InputError, match="unknown prompt format"):
        CompletionChat("http://127.0.0.1:9/v1", format="no-such-format")


def test_the_cli_backend_detects_the_format_from_the_model_id() -> None:
    from chatlane._config import BackendSettings, make_backend

    model = "meta-llama/Llama-3.3-70B-Instruct"
    detected = formats.detect(ModelInfo(model_id=model))
    assert detected is not None
    backend, _ = make_backend(BackendSettings(completion_url="http://127.0.0.1:9/v1", model=model))
    assert backend.format.name == detected.name  # type: ignore[attr-defined]
    backend, _ = make_backend(BackendSettings(completion_url="http://127.0.0.1:9/v1"))
    assert backend.format.name == formats.get(formats.DEFAULT).name  # type: ignore[attr-defined]


# -- the protocol is all that is used ----------------------------------------------------------

PROTOCOL = {name for name in dir(PromptFormat) if not name.startswith("_")}
FORMAT_NAMES = {"format", "fmt", "_format"}


def _format_attributes(source: str) -> set[str]:
    """The attributes read from anything called ``format``/``fmt`` (``self.format.render``)."""
    used: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        name = (
            owner.id
            if isinstance(owner, ast.Name)
            else owner.attr
            if isinstance(owner, ast.Attribute)
            else None
        )
        if name in FORMAT_NAMES:
            used.add(node.attr)
    return used


def test_backends_and_faces_use_only_the_protocol() -> None:
    assert {"render", "parse", "stream_parser", "grammar", "matches"} <= PROTOCOL
    # The modules that hold prompt formats (elsewhere ``format`` is a response format).
    holders = [*sorted((SRC / "backends").glob("*.py")), SRC / "cli.py", SRC / "_config.py"]
    holders.append(SRC / "demo.py")
    for path in holders:
        extra = _format_attributes(path.read_text(encoding="utf-8")) - PROTOCOL
        assert not extra, f"{path.relative_to(SRC)} reads {sorted(extra)} of a format"


def test_the_attribute_check_sees_a_reach_around() -> None:
    assert _format_attributes("self.format.python_tag") == {"python_tag"}
    assert _format_attributes("fmt.render(r).text") == {"render"}
