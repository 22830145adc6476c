"""The ``chatlane`` command: chat, run, render, parse, logs, batch, demo and serve.

Only the standard library is imported up front, so ``chatlane --help`` answers at once;
each command imports what it needs when it runs. Errors are one line on stderr: exit status
2 for a command line that cannot be used as given, 1 for a failure while running, 130 for
Ctrl-C; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from chatlane._config import UsageError

if TYPE_CHECKING:
    from chatlane._display import Display
    from chatlane.backends.base import Backend
    from chatlane.batch import BatchProgress
    from chatlane.conversation import Conversation
    from chatlane.messages import Message
    from chatlane.request import ChatRequest
    from chatlane.response import ChatResponse
    from chatlane.store import LoggedConversation, Store

__all__ = ["build_parser", "main"]

EXAMPLES = {
    "run": """examples:
  chatlane run "Name three rivers" --base-url http://127.0.0.1:8080/v1
  chatlane run "Weather in Paris?" --tool weather.py:get_weather --gguf model.gguf
  chatlane run "A city" --schema city.json --json --backend tests/fakes.py:backend
  echo "Summarise this" | chatlane run - --model gpt-4o-mini""",
    "chat": """commands inside the chat:
  /system TEXT   set the system prompt (without TEXT: show it)
  /tools         list the tools the model may call
  /save FILE     write the conversation to FILE as JSON
  /help          show these commands
  /exit          leave (or Ctrl-D)
  \"\"\"           start or end a multi-line message (a line ending in \\ continues too)""",
    "batch": """input lines: {"id": "q1", "messages": [{"role": "user", "content": "Hi"}]}
  (or the OpenAI Batch API shape {"custom_id": "q1", "body": {...}}).
output lines: {"id": "q1", "line": 1, "response": {...}} or {"id": ..., "error": {...}},
  appended as each request finishes; run the same command again to resume.""",
}

BACKEND_HELP = """Give one of --base-url, --completion-url, --gguf or --backend. Without any,
chatlane reads $CHATLANE_BACKEND, $CHATLANE_BASE_URL, $CHATLANE_COMPLETION_URL or $CHATLANE_GGUF
(and $CHATLANE_MODEL, $CHATLANE_DIALECT, ...), then the config file ($CHATLANE_CONFIG, else
~/.config/chatlane/config.toml, with the same names in lower case). The API key comes from
$CHATLANE_API_KEY or $OPENAI_API_KEY (or the config file), never from the command line."""


# ---------------------------------------------------------------- parser


def _format_names() -> str:
    from chatlane import formats

    return ", ".join(formats.names())


def _format_help() -> str:
    from chatlane import formats

    return f"the prompt format: {_format_names()} (default {formats.DEFAULT})"


def _add_backend_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backend", BACKEND_HELP)
    group.add_argument("--base-url", metavar="URL", help="an OpenAI-compatible chat endpoint")
    group.add_argument(
        "--completion-url", metavar="URL", help="a raw completion endpoint (chatlane renders)"
    )
    group.add_argument("--gguf", metavar="PATH", help="a GGUF model run in-process by llama.cpp")
    group.add_argument(
        "--backend",
        metavar="MODULE:FACTORY",
        help="a Backend object, or a function returning one, from Python code "
        "(module:name or path/file.py:name)",
    )
    group.add_argument("--model", metavar="NAME", help="the model name to ask for")
    group.add_argument(
        "--dialect", metavar="NAME", help="server dialect: openai, vllm, llama.cpp, aleph-alpha"
    )
    group.add_argument(
        "--format",
        metavar="NAME",
        help=f"prompt format for --completion-url and --gguf: {_format_names()} "
        "(default: detected from the model)",
    )
    group.add_argument(
        "--profile", metavar="NAME", help="the prompt format's profile, where it has several"
    )
    group.add_argument(
        "--retries",
        type=int,
        metavar="N",
        help="retries of a failed HTTP request (rate limits, server errors, dropped "
        "connections), with backoff; default 2",
    )


def _add_log_options(parser: argparse.ArgumentParser, *, allow_off: bool = True) -> None:
    parser.add_argument(
        "--db",
        metavar="PATH",
        help="the conversation log (default: $CHATLANE_DB or logs.db in the user data directory)",
    )
    if allow_off:
        parser.add_argument(
            "--no-log", action="store_true", help="do not record (like CHATLANE_LOG=off)"
        )


def _add_conversation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-s", "--system", metavar="TEXT", help="the system prompt")
    parser.add_argument(
        "-t",
        "--tool",
        action="append",
        default=[],
        metavar="MODULE:FUNCTION",
        help="a Python function the model may call, run by the agent loop (repeatable)",
    )
    parser.add_argument(
        "--code-interpreter",
        nargs="?",
        const="namespaces",
        choices=["namespaces", "limits-only"],
        metavar="ISOLATION",
        help="let the model run Python in the sandbox: 'namespaces' (the default, refused where "
        "the host cannot isolate) or 'limits-only' (no isolation from files and network)",
    )
    parser.add_argument(
        "--mcp",
        action="append",
        default=[],
        metavar="SERVER",
        help="the tools of an MCP server: a command line ('python server.py', over stdio) or "
        "a streamable-HTTP URL (repeatable; needs chatlane[mcp])",
    )
    parser.add_argument(
        "-c",
        "--continue",
        dest="continue_id",
        metavar="ID",
        help="continue a logged conversation (an id, a unique prefix, or 'last')",
    )
    parser.add_argument("--max-tokens", type=int, metavar="N", help="stop after N tokens")
    parser.add_argument("--temperature", type=float, metavar="T", help="sampling temperature")
    parser.add_argument("--seed", type=int, metavar="N", help="sampling seed, where supported")
    parser.add_argument(
        "--session-header",
        metavar="NAME",
        help="send a stable id for the conversation in this header (or a preset: vllm-router, "
        "session), so a cluster router keeps it on one replica and its prefix cache warm",
    )
    parser.add_argument(
        "--no-color",
        action="store_true",
        help="plain text even on a terminal (as NO_COLOR does); answers are rendered as "
        "markdown on a terminal otherwise",
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (also what docs/cli.md is generated from)."""
    from chatlane._version import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback of an error",
    )
    parser = argparse.ArgumentParser(
        prog="chatlane",
        description="Chat with Llama-family and OpenAI-compatible models: chat endpoints, "
        "raw completion endpoints and an embedded llama.cpp engine.",
        epilog="Run 'chatlane COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"chatlane {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help,
            description=description,
            parents=[common],
            epilog=EXAMPLES.get(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    chat = command(
        "chat",
        "an interactive conversation",
        "An interactive conversation; answers are shown as they stream.",
    )
    _add_conversation_options(chat)
    _add_backend_options(chat)
    _add_log_options(chat)
    chat.set_defaults(handler=cmd_chat)

    run = command(
        "run",
        "one prompt, answered on stdout",
        "Send one prompt and stream the answer to stdout. With --tool the agent loop runs "
        "the model's tool calls until it answers.",
    )
    run.add_argument("prompt", metavar="PROMPT", help="the prompt ('-' reads it from stdin)")
    _add_conversation_options(run)
    run.add_argument(
        "--schema",
        metavar="SPEC",
        help="structured output: a JSON schema file, or module:Model (a Pydantic model)",
    )
    run.add_argument(
        "--json", action="store_true", help="print one JSON object instead of streamed text"
    )
    run.add_argument("--no-stream", action="store_true", help="print the answer once complete")
    _add_backend_options(run)
    _add_log_options(run)
    run.set_defaults(handler=cmd_run)

    render = command(
        "render",
        "the exact prompt a conversation renders to",
        "Print the exact prompt that a conversation JSON file (an OpenAI-style body with "
        "'messages' and optional 'tools') renders to in a prompt format. Needs no backend.",
    )
    render.add_argument("file", metavar="FILE", help="the conversation JSON ('-' for stdin)")
    render.add_argument("--format", default=None, help=_format_help())
    render.add_argument(
        "--profile", default=None, help="the format's profile, where it has several"
    )
    render.add_argument(
        "--tool-format", default=None, help="how the format writes tools, where it has several"
    )
    render.add_argument(
        "--date", default=None, help="the date the system prompt states (default: today)"
    )
    render.add_argument("--tokens", action="store_true", help="print the token ids and count")
    render.add_argument("--json", action="store_true", help="print text and tokens as JSON")
    render.set_defaults(handler=cmd_render)

    parse = command(
        "parse",
        "raw model output to content and tool calls",
        "Read a raw model output file and print its content and tool calls as JSON. "
        "Needs no backend.",
    )
    parse.add_argument("file", metavar="FILE", help="the raw output ('-' for stdin)")
    parse.add_argument("--format", default=None, help=_format_help())
    parse.add_argument(
        "--request",
        metavar="FILE",
        help="the conversation JSON it answers (tells which tools were offered)",
    )
    parse.set_defaults(handler=cmd_parse)

    doctor = command(
        "doctor",
        "probe a server and recommend settings",
        "Probe a server the way chatlane will use it: its chat and raw completion endpoints, "
        "its model and prompt format, whether it adds the begin-of-sequence token, honours "
        "max_tokens, returns tool calls in tool_calls, streams what it answers whole, and "
        "reports usage. Ends with the OpenAIChat/CompletionChat settings to use. Exits 1 "
        "when a check fails.",
    )
    doctor.add_argument("url", metavar="URL", help="the server's base URL")
    doctor.add_argument(
        "--api-key", metavar="KEY", help="sent as a bearer token (or CHATLANE_API_KEY)"
    )
    doctor.add_argument(
        "--model", metavar="NAME", help="the model to probe (default: the first listed)"
    )
    doctor.add_argument("--format", metavar="NAME", help="the prompt format for raw prompts")
    doctor.add_argument(
        "--timeout", type=float, default=60.0, metavar="S", help="seconds per request"
    )
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.set_defaults(handler=cmd_doctor)

    logs = command(
        "logs",
        "list, show and search logged conversations",
        "Read the conversation log. Every chat, run and batch request is recorded "
        "(CHATLANE_LOG=off turns it off).",
    )
    _add_log_options(logs, allow_off=False)
    logs.add_argument("-n", "--limit", type=int, default=20, help="how many to list (20)")
    logs.add_argument("--json", action="store_true", help="print JSON")
    # The actions repeat the options so they may come last; SUPPRESS keeps an action's
    # default from overwriting what was given before it.
    logs_options = argparse.ArgumentParser(add_help=False)
    logs_options.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON"
    )
    logs_options.add_argument("--db", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    limit = argparse.ArgumentParser(add_help=False)
    limit.add_argument("-n", "--limit", type=int, default=argparse.SUPPRESS, help="how many (20)")
    logs_commands = logs.add_subparsers(dest="logs_command", metavar="ACTION")
    logs_commands.add_parser(
        "list", help="the latest conversations (the default)", parents=[common, logs_options, limit]
    )
    logs_show = logs_commands.add_parser(
        "show", help="one conversation in full", parents=[common, logs_options]
    )
    logs_show.add_argument("id", metavar="ID", help="an id, a unique prefix, or 'last'")
    logs_search = logs_commands.add_parser(
        "search", help="conversations containing a text", parents=[common, logs_options, limit]
    )
    logs_search.add_argument("text", metavar="TEXT")
    logs_commands.add_parser("path", help="print where the log is", parents=[common, logs_options])
    logs.set_defaults(handler=cmd_logs)

    batch = command(
        "batch",
        "many requests from a JSONL file, resumable",
        "Run every request of a JSON Lines file, N at a time, appending each result to the "
        "output as it finishes. Run it again after an interruption: what is done is skipped.",
    )
    batch.add_argument("input", metavar="INPUT", help="requests, one JSON object per line")
    batch.add_argument("-o", "--output", required=True, metavar="OUTPUT", help="results (JSONL)")
    batch.add_argument(
        "-j", "--concurrency", type=int, default=4, metavar="N", help="requests at once (4)"
    )
    batch.add_argument(
        "--retry-failed", action="store_true", help="run inputs that failed before again"
    )
    batch.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    _add_backend_options(batch)
    _add_log_options(batch)
    batch.set_defaults(handler=cmd_batch)

    demo = command(
        "demo",
        "the embedded engine, end to end",
        "Render, stream, force a tool call, run it and answer on the embedded engine "
        "(a tiny random-weight model, or $CHATLANE_MODEL).",
    )
    demo.set_defaults(handler=cmd_demo)

    serve = command(
        "serve",
        "an OpenAI-compatible gateway over any backend",
        "Serve POST /v1/chat/completions (streamed and whole), GET /v1/models and GET /health "
        "in front of one backend, or of several named in a models file. Any OpenAI client gets "
        "the model's tool calls, reasoning and structured output as chatlane reads them. "
        "Needs the serve extra: pip install 'chatlane[serve]'.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="the port to listen on (8000)")
    serve.add_argument(
        "--models",
        metavar="FILE",
        help="a TOML file with one [models.NAME] table of backend settings per served model "
        "(instead of the backend options)",
    )
    serve.add_argument(
        "--served-model",
        metavar="NAME",
        help="the model name clients ask for (default: --model, else the backend's model)",
    )
    serve.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="a bearer key clients must send (repeatable; also $CHATLANE_SERVE_KEYS, "
        "comma-separated, which keeps keys out of the process list)",
    )
    serve.add_argument(
        "--max-concurrency",
        type=int,
        default=256,
        metavar="N",
        help="requests at once; more are answered 429 with Retry-After (256)",
    )
    serve.add_argument(
        "--max-body",
        type=int,
        default=8 * 1024 * 1024,
        metavar="BYTES",
        help="the largest request body accepted, in bytes (8 MiB)",
    )
    serve.add_argument(
        "--affinity-header",
        metavar="NAME",
        help="a request header passed on to the upstream, for session affinity behind a "
        "load balancer (e.g. X-Session-Id)",
    )
    _add_backend_options(serve)
    _add_log_options(serve)
    serve.set_defaults(handler=cmd_serve)
    return parser


REFERENCE_HEADER = """# The chatlane command line

Every command and option, as `--help` prints them. This file is generated from the code
(`python -c "from chatlane.cli import cli_reference; print(cli_reference(), end='')" > docs/cli.md`)
and a test fails when it drifts. See the README for examples with real output.
"""


def cli_reference(width: int = 100) -> str:
    """The help of every command and subcommand as Markdown (what docs/cli.md holds)."""
    import functools

    sections = [REFERENCE_HEADER]

    def visit(parser: argparse.ArgumentParser) -> None:
        parser.formatter_class = functools.partial(parser.formatter_class, width=width)  # type: ignore[call-arg]
        sections.append(f"\n## {parser.prog}\n\n```text\n{parser.format_help().rstrip()}\n```\n")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in dict.fromkeys(action.choices.values()):
                    visit(child)

    visit(build_parser())
    return "".join(sections)


# ---------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    from chatlane.errors import ChatlaneError

    try:
        result: int = args.handler(args)
        return result
    except KeyboardInterrupt:
        if debug:
            raise
        sys.stderr.write("\nchatlane: interrupted\n")
        return 130
    except BrokenPipeError:
        # The reader went away (``chatlane ... | head``): stop quietly, and keep Python from
        # complaining when it flushes stdout at exit (the recipe of the signal module's docs).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except UsageError as e:
        if debug:
            raise
        parser.exit(2, f"chatlane {args.command}: error: {_one_line(e)}\n")
    except (ChatlaneError, OSError) as e:
        if debug:
            raise
        sys.stderr.write(f"chatlane: error: {_one_line(e)}\n")
        return 1
    except Exception as e:
        if debug:
            raise
        sys.stderr.write(
            f"chatlane: internal error: {type(e).__name__}: {_one_line(e)} "
            "(run with --debug for the traceback)\n"
        )
        return 1
    return 1  # pragma: no cover - parser.exit does not return


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"{error.strerror}: {error.filename!r}"
    text = " ".join(str(error).split())
    return text or type(error).__name__


# ---------------------------------------------------------------- shared pieces


def _open_store(args: argparse.Namespace) -> Store | None:
    from chatlane.store import Store

    if getattr(args, "no_log", False):
        return None
    return Store.open_default(args.db)


def _backend(args: argparse.Namespace) -> tuple[Backend, str]:
    from chatlane._config import make_backend, resolve_settings

    options = {
        name: getattr(args, name, None)
        for name in (
            "backend",
            "base_url",
            "completion_url",
            "gguf",
            "model",
            "dialect",
            "format",
            "profile",
        )
    }
    settings = resolve_settings(options)
    backend, label = make_backend(settings, retries=getattr(args, "retries", None))
    if settings.model is not None:
        backend.model = settings.model  # asked for by name: it wins over the backend's default
    return backend, label


def _read_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise UsageError(f"no such file: {path!r}") from e
    except UnicodeDecodeError as e:
        raise UsageError(f"{path!r} is not UTF-8 text") from e


def _read_request(path: str) -> ChatRequest:
    """A conversation JSON file (an OpenAI-style body) as a request."""
    text = _read_text(path)
    try:
        data = json.loads(text)
    except ValueError as e:
        raise UsageError(f"{path!r} is not valid JSON: {e}") from e
    if isinstance(data, list):
        data = {"messages": data}
    return _decode_request(data)


def _decode_request(data: Any) -> ChatRequest:
    from chatlane.wire.openai import decode_request

    return decode_request(data)


def _ask(conversation: Conversation, text: str, display: Display) -> ChatResponse:
    """Ask ``text`` in the conversation, showing the answer as it streams (the library's
    `Conversation` logs every call; Ctrl-C stops the answer and keeps what arrived)."""
    stream = conversation.ask_stream(text)
    try:
        for event in stream:
            display.event(event)
    except KeyboardInterrupt:
        stream.close()
        raise
    finally:
        display.close()
    run = conversation.last_run
    if conversation.tools and run is not None and not run.completed:
        display.note(f"[the run ended early: {run.detail}]")
    return stream.response


def _conversation(args: argparse.Namespace) -> Conversation:
    from chatlane._config import load_tool
    from chatlane.conversation import Conversation

    tools = [load_tool(spec) for spec in args.tool]
    if args.mcp:
        from chatlane.mcp import tools as mcp_tools

        # The servers stay open for the command's life and close at exit.
        tools += mcp_tools(*args.mcp)
    backend, label = _backend(args)
    store = _open_store(args)
    params: dict[str, Any] = {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "seed": args.seed,
    }
    schema = getattr(args, "schema", None)
    if schema is not None:
        from chatlane._config import load_schema

        params["response_format"] = load_schema(schema)
    if getattr(args, "code_interpreter", None):
        from chatlane._sandbox import Sandbox

        params["code_interpreter"] = Sandbox(isolation=args.code_interpreter)
        sys.stderr.write(
            f"[code_interpreter: model code runs with isolation={args.code_interpreter}]\n"
        )
    if args.continue_id:
        from chatlane.store import StoreError

        if store is None:
            raise UsageError("--continue needs the log, which is off (CHATLANE_LOG or --no-log)")
        try:
            conversation, _ = Conversation.resume(
                backend,
                store,
                args.continue_id,
                tools=tools,
                label=label,
                session_header=args.session_header,
                **params,
            )
        except StoreError as e:
            raise UsageError(str(e)) from e
    else:
        conversation = Conversation(
            backend,
            store=store,
            tools=tools,
            label=label,
            session_header=args.session_header,
            **params,
        )
    if args.system is not None:
        conversation.set_system(args.system)
    return conversation


# ---------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    """``chatlane run``."""
    from chatlane._records import usage_to_dict

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt.strip():
        raise UsageError("the prompt is empty")
    conversation = _conversation(args)
    stream_to = None if (args.json or args.no_stream) else sys.stdout
    from chatlane.errors import StreamInterrupted, StructuredOutputError

    try:
        from chatlane._display import display_for

        display = display_for(stream_to, sys.stderr, no_color=args.no_color)
        response = _ask(conversation, prompt, display)
    except StreamInterrupted as e:
        if stream_to is not None and e.partial.text and not e.partial.text.endswith("\n"):
            stream_to.write("\n")  # the partial answer stays on stdout; the error goes below it
        raise
    finally:
        conversation.backend.close()
    if args.json:
        out = _response_json(response, conversation.id)
        run = conversation.last_run
        if run is not None:
            out["steps"] = run.steps
            out["stop_reason"] = str(run.stop_reason)
            out["tool_runs"] = [
                {
                    "name": r.call.name,
                    "arguments": r.call.arguments,
                    "status": r.status,
                    "result": r.content,
                }
                for r in run.tool_runs
            ]
            out["usage"] = usage_to_dict(run.usage)
            if run.sandbox_isolation is not None:
                out["sandbox_isolation"] = run.sandbox_isolation
        failure: StructuredOutputError | None = None
        if response.response_format is not None:
            try:
                out["parsed"] = _parsed_json(response)
            except StructuredOutputError as e:
                out["parsed"] = None
                out["parse_error"] = str(e)
                failure = e
        sys.stdout.write(json.dumps(out, ensure_ascii=False, indent=2) + "\n")
        if failure is not None:
            raise failure  # after the answer is out: it is not lost
    else:
        if stream_to is None:
            sys.stdout.write(response.text)
        if response.text and not response.text.endswith("\n"):
            sys.stdout.write("\n")
        if response.response_format is not None:
            _parsed_json(response)  # a structured answer that does not validate is an error
    return 0


def _parsed_json(response: ChatResponse) -> Any:
    parsed = response.parsed
    dump = getattr(parsed, "model_dump", None)
    return dump(mode="json") if callable(dump) else parsed


def _response_json(response: ChatResponse, conversation_id: str | None) -> dict[str, Any]:
    from chatlane._records import usage_to_dict

    return {
        "conversation_id": conversation_id,
        "model": response.model,
        "text": response.text,
        "tool_calls": [
            {"id": c.id, "name": c.name, "arguments": c.arguments, "raw_arguments": c.raw_arguments}
            for c in response.tool_calls
        ],
        "finish_reason": response.finish_reason.value,
        "usage": usage_to_dict(response.usage),
    }


# ---------------------------------------------------------------- chat


def _read_message(read: Callable[[str], str]) -> str | None:
    """One user message: a line, lines joined by a trailing backslash, or a block between
    lines of three double quotes. None at end of input."""
    try:
        line = read("> ")
    except EOFError:
        return None
    if line.strip() == '"""':
        lines: list[str] = []
        while True:
            try:
                line = read("... ")
            except EOFError:
                break
            if line.strip() == '"""':
                break
            lines.append(line)
        return "\n".join(lines)
    lines = []
    while line.endswith("\\"):
        lines.append(line[:-1])
        try:
            line = read("... ")
        except EOFError:
            line = ""
            break
    lines.append(line)
    return "\n".join(lines)


def cmd_chat(args: argparse.Namespace) -> int:
    """``chatlane chat``."""
    from chatlane.errors import ChatlaneError

    conversation = _conversation(args)
    out = sys.stdout
    from chatlane._display import display_for

    display = display_for(out, out, no_color=args.no_color)
    interactive = sys.stdin.isatty()
    if interactive:
        import contextlib

        with contextlib.suppress(ImportError):  # line editing and history where available
            import readline  # noqa: F401
    model = conversation.backend.model or "the model"
    out.write(
        f"chatlane chat with {model} ({conversation.label}). /help for commands, Ctrl-D to leave.\n"
    )
    if conversation.id is not None:
        out.write(
            f"continuing conversation {conversation.id} ({len(conversation.messages)} messages)\n"
        )
    out.flush()

    def read(prompt: str) -> str:
        if interactive:
            return input(prompt)
        line = sys.stdin.readline()  # piped input: no prompts in the output
        if not line:
            raise EOFError
        return line.rstrip("\n")

    try:
        while True:
            try:
                text = _read_message(read)
            except KeyboardInterrupt:
                out.write("\n")
                continue
            if text is None:
                out.write("\n")
                break
            if not text.strip():
                continue
            if text.startswith("/"):
                if _chat_command(conversation, text, out):
                    break
                continue
            try:
                response = _ask(conversation, text, display)
            except KeyboardInterrupt:
                out.write("\n[stopped]\n")
                continue
            except ChatlaneError as e:
                out.write(f"\n[error: {_one_line(e)}]\n")
                continue
            if not response.text.endswith("\n"):
                out.write("\n")
            out.flush()
    finally:
        conversation.backend.close()
    if conversation.id is not None:
        out.write(
            f"conversation {conversation.id} is in the log: "
            f"chatlane chat --continue {conversation.id}\n"
        )
    return 0


def _chat_command(conversation: Conversation, text: str, out: TextIO) -> bool:
    """Run a /command; True when the chat should end."""
    name, _, rest = text.partition(" ")
    rest = rest.strip()
    if name in ("/exit", "/quit"):
        return True
    if name == "/help":
        out.write(EXAMPLES["chat"].split("\n", 1)[1] + "\n")
    elif name == "/system":
        if rest:
            conversation.set_system(rest)
            out.write("[system prompt set]\n")
        else:
            out.write(f"{conversation.system or '[no system prompt]'}\n")
    elif name == "/tools":
        if not conversation.tools:
            out.write("[no tools: start the chat with --tool module:function]\n")
        for t in conversation.tools:
            out.write(f"{t.name}: {t.description or ''}\n")
    elif name == "/save":
        if not rest:
            out.write("[usage: /save FILE]\n")
        else:
            from chatlane.store import messages_to_json

            body = {"messages": messages_to_json(conversation.messages)}
            try:
                Path(rest).expanduser().write_text(
                    json.dumps(body, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
                )
            except OSError as e:
                out.write(f"[cannot save: {_one_line(e)}]\n")
            else:
                out.write(f"[saved {len(conversation.messages)} messages to {rest}]\n")
    else:
        out.write(f"[unknown command {name}; /help lists them]\n")
    out.flush()
    return False


# ---------------------------------------------------------------- render and parse


def cmd_render(args: argparse.Namespace) -> int:
    """``chatlane render``."""
    from chatlane._config import make_format

    fmt = make_format(args.format, args.profile, tool_format=args.tool_format, date=args.date)
    request = _read_request(args.file)
    prompt = fmt.render(request)
    if args.json:
        body = {"text": prompt.text, "tokens": list(prompt.tokens), "count": len(prompt.tokens)}
        sys.stdout.write(json.dumps(body, ensure_ascii=False) + "\n")
    elif args.tokens:
        sys.stdout.write(" ".join(str(t) for t in prompt.tokens) + "\n")
        sys.stdout.write(f"{len(prompt.tokens)} tokens\n")
    else:
        sys.stdout.write(prompt.text)
        if sys.stdout.isatty() and not prompt.text.endswith("\n"):
            sys.stdout.write("\n")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """``chatlane doctor``."""
    from chatlane.doctor import diagnose

    key = args.api_key or os.environ.get("CHATLANE_API_KEY")
    report = diagnose(
        args.url, api_key=key, model=args.model, format=args.format, timeout=args.timeout
    )
    if args.json:
        sys.stdout.write(json.dumps(report.to_json(), ensure_ascii=False, indent=1) + "\n")
    else:
        sys.stdout.write(report.to_text())
    return 0 if report.ok else 1


def cmd_parse(args: argparse.Namespace) -> int:
    """``chatlane parse``."""
    from chatlane._config import make_format

    fmt = make_format(args.format)
    raw = _read_text(args.file)
    request = _read_request(args.request) if args.request else None
    parsed = fmt.parse(raw, request)
    body = {
        "content": parsed.content,
        "reasoning": parsed.message().reasoning,
        "tool_calls": [
            {
                "id": c.id,
                "name": c.name,
                "arguments": c.arguments,
                "raw_arguments": c.raw_arguments,
                "error": c.arguments_error,
            }
            for c in parsed.tool_calls
        ],
        "finish_reason": parsed.finish_reason.value,
        "stop_sequence": parsed.stop_sequence,
        "partial_call": parsed.partial_call,
        "unknown_tools": list(parsed.unknown_tools),
        "malformed_calls": list(parsed.malformed_calls),
    }
    sys.stdout.write(json.dumps(body, ensure_ascii=False, indent=2) + "\n")
    return 0


# ---------------------------------------------------------------- logs


def cmd_logs(args: argparse.Namespace) -> int:
    """``chatlane logs``."""
    from chatlane.store import Store, StoreError, conversation_to_json, default_db_path

    action = args.logs_command or "list"
    path = Path(args.db).expanduser() if args.db else default_db_path()
    if action == "path":
        sys.stdout.write(f"{path}\n")
        return 0
    if not path.exists():
        raise UsageError(f"no log at {str(path)!r} yet (nothing has been recorded there)")
    with Store(path) as store:
        if action == "show":
            try:
                logged = store.conversation(args.id)
            except StoreError as e:
                raise UsageError(str(e)) from e
            if args.json:
                sys.stdout.write(
                    json.dumps(conversation_to_json(logged), ensure_ascii=False, indent=2) + "\n"
                )
            else:
                _print_conversation(logged, sys.stdout)
            return 0
        if action == "search":
            found = store.search(args.text, args.limit)
        else:
            found = store.conversations(args.limit)
    if args.json:
        rows = [
            {
                "id": s.id,
                "created_at": s.created_at,
                "updated_at": s.updated_at,
                "title": s.title,
                "backend": s.backend,
                "model": s.model,
                "calls": s.calls,
                "total_tokens": s.total_tokens,
                "cached_tokens": s.cached_tokens,
                "reasoning_tokens": s.reasoning_tokens,
            }
            for s in found
        ]
        sys.stdout.write(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
        return 0
    if not found:
        sys.stdout.write("no conversations\n" if action == "list" else "no match\n")
        return 0
    sys.stdout.write(f"{'ID':<16}  {'UPDATED':<16}  {'MODEL':<14}  CALLS  TOKENS  CACHED  TITLE\n")
    for s in found:
        title = " ".join(s.title.split())
        title = title if len(title) <= 40 else title[:39] + "…"
        sys.stdout.write(
            f"{s.id:<16}  {_local_time(s.updated_at)[:16]:<16}  {(s.model or '-')[:14]:<14}"
            f"  {s.calls:>5}  {s.total_tokens:>6}  {s.cached_tokens:>6}  {title}\n"
        )
    return 0


def _local_time(stamp: str) -> str:
    """A logged UTC timestamp in the user's local time, to the second."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return stamp


def _print_conversation(logged: LoggedConversation, out: TextIO) -> None:
    s = logged.summary
    out.write(
        f"conversation {s.id}  {_local_time(s.created_at)}  "
        f"{s.backend or '-'}  model {s.model or '-'}  {s.total_tokens} tokens"
        f"{f' ({s.cached_tokens} cached)' if s.cached_tokens else ''}\n"
    )
    shown = 0
    for number, call in enumerate(logged.calls, 1):
        r = call.response
        facts = [_local_time(call.started_at)]
        if call.batch_item is not None:
            facts.append(f"batch item {call.batch_item}")
        if call.duration_ms is not None:
            facts.append(f"{call.duration_ms:.0f} ms")
        if call.first_token_ms is not None:
            facts.append(f"first token {call.first_token_ms:.0f} ms")
        if r is not None:
            facts.append(r.finish_reason.value)
            if r.usage is not None:
                facts.append(f"{r.usage.prompt_tokens}+{r.usage.completion_tokens} tokens")
                if r.usage.cached_tokens is not None:
                    facts.append(f"{r.usage.cached_tokens} cached")
                if r.usage.reasoning_tokens is not None:
                    facts.append(f"{r.usage.reasoning_tokens} reasoning")
        out.write(f"\n--- call {number}: {', '.join(facts)}\n")
        messages = call.messages
        if shown > len(messages):
            shown = 0
        for m in messages[shown:]:
            _print_message(m, out)
        if r is not None:
            _print_message(r.message, out)
            shown = len(messages) + 1
        else:
            shown = len(messages)
        for run in call.tool_runs:
            outcome = f"error: {run.error}" if run.error else run.result
            out.write(f"[ran {run.name}({run.arguments}) -> {outcome}]\n")
        if call.error:
            out.write(f"[error: {call.error}]\n")


def _print_message(message: Message, out: TextIO) -> None:
    text = message.text
    if message.images:
        text += f" [{len(message.images)} image(s)]"
    out.write(f"{message.role.value}: {text}\n")
    for c in message.tool_calls:
        out.write(f"  [call {c.name}({c.raw_arguments}) id={c.id}]\n")


# ---------------------------------------------------------------- batch


class ProgressLine:
    """A one-line progress bar on stderr: done, failed, rate, ETA and tokens."""

    def __init__(self, stream: TextIO, *, live: bool) -> None:
        self.stream = stream
        self.live = live
        self._last = 0.0
        self._shown = ""

    def __call__(self, progress: BatchProgress, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and (
            now - self._last < (0.1 if self.live else 5.0)
            or (not self.live and progress.finished == 0)
        ):
            return
        self._last = now
        p = progress
        finished = p.skipped + p.finished
        width = 24
        filled = width * finished // p.total if p.total else width
        eta = "-" if p.eta is None else _duration(p.eta)
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] {finished}/{p.total} done, "
            f"{p.failed} failed, {p.rate:.1f}/s, ETA {eta}, {p.tokens} tokens"
        )
        if self.live:
            self.stream.write("\r" + line + "\x1b[K" + ("\n" if final else ""))
        elif line != self._shown:
            self.stream.write(line + "\n")
        self._shown = line
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def cmd_batch(args: argparse.Namespace) -> int:
    """``chatlane batch``."""
    from chatlane.batch import read_batch_input, run_batch

    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {args.concurrency}")
    if Path(args.input).resolve() == Path(args.output).resolve():
        raise UsageError("the output must be another file than the input")
    if not Path(args.input).is_file():
        raise UsageError(f"no such file: {args.input!r}")
    items = read_batch_input(args.input, _decode_request)
    backend, label = _backend(args)
    store = _open_store(args)
    show = None if args.no_progress else ProgressLine(sys.stderr, live=sys.stderr.isatty())
    latest: list[BatchProgress] = []

    def on_progress(progress: BatchProgress) -> None:
        latest[:] = [progress]
        if show is not None:
            show(progress)

    try:
        progress = run_batch(
            backend,
            items,
            args.output,
            concurrency=args.concurrency,
            retry_failed=args.retry_failed,
            on_progress=on_progress,
            store=store,
            backend_name=label,
        )
    except KeyboardInterrupt:
        done = latest[0].skipped + latest[0].finished if latest else 0
        sys.stderr.write(
            f"\nbatch: interrupted with {done} of {len(items)} done (kept in {args.output}); "
            "run the same command again to resume\n"
        )
        raise
    finally:
        backend.close()
        if store is not None:
            store.close()
    if show is not None:
        show(progress, final=True)
    sys.stderr.write(
        f"batch: {progress.done} answered, {progress.failed} failed, {progress.skipped} already "
        f"done, in {progress.elapsed:.1f}s; results in {args.output}\n"
    )
    if progress.failed:
        sys.stderr.write(
            "batch: failed requests have their error on their line; "
            "run again with --retry-failed to retry them\n"
        )
        return 1
    return 0


# ---------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    """``chatlane demo``."""
    from chatlane.demo import run

    return run(sys.stdout)


# ---------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    """``chatlane serve``."""
    try:
        from chatlane.serve import Gateway, ServedModel, ServeOptions, keys_from_env, load_models
        from chatlane.serve import serve as run_server
    except ImportError as e:  # pragma: no cover - the extra is installed in development
        raise UsageError(
            f"chatlane serve needs the serve extra: pip install 'chatlane[serve]' ({e})"
        ) from e
    from chatlane._config import make_backend

    models: list[ServedModel] = []
    if args.models:
        given = [n for n in ("backend", "base_url", "completion_url", "gguf") if getattr(args, n)]
        if given:
            raise UsageError("give either --models or the backend options, not both")
        for name, settings in load_models(args.models):
            backend, label = make_backend(settings, retries=args.retries)
            if settings.model is not None:
                backend.model = settings.model
            models.append(ServedModel(name, backend, label))
    else:
        backend, label = _backend(args)
        name = args.served_model or args.model or backend.model or "chatlane"
        models.append(ServedModel(name, backend, label))
    store = _open_store(args)
    options = ServeOptions(
        api_keys=tuple(args.api_key) + keys_from_env(),
        max_body_bytes=args.max_body,
        max_concurrency=args.max_concurrency,
        affinity_header=args.affinity_header,
        store=store,
    )
    gateway = Gateway(models, options)

    def ready(url: str) -> None:
        served = ", ".join(f"{m.name} ({m.label})" for m in models)
        keys = "with API keys" if options.api_keys else "without API keys"
        log_note = f"logging to {store.path}" if store is not None else "not logging"
        sys.stderr.write(f"chatlane serve: {url} serving {served}, {keys}, {log_note}\n")
        sys.stderr.flush()

    try:
        run_server(gateway, args.host, args.port, log_level="warning", on_ready=ready)
    except KeyboardInterrupt:
        # Ctrl-C is how a gateway is stopped: uvicorn has shut down gracefully by now.
        sys.stderr.write("chatlane serve: stopped\n")
    finally:
        if store is not None:
            store.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
