"""`chatlane doctor URL`: probe a server the way chatlane will use it, and say how to use it.

`diagnose` finds the server's endpoints (OpenAI-compatible chat, and the raw completion
endpoints of vLLM/OpenAI, llama.cpp and Aleph Alpha), the model it serves and the prompt
format that fits, then checks with small real requests what matters to chatlane:

- whether the server adds the begin-of-sequence token to a text prompt (chatlane must then
  leave it out, or the model sees it twice);
- whether ``max_tokens`` bounds generation;
- whether tool calls come back in ``tool_calls`` or leak into ``content``, and whether
  several calls come back in one turn;
- whether a streamed and a whole answer agree (same seed, temperature 0);
- whether usage is reported, streamed and not.

It ends with the `OpenAIChat`/`CompletionChat` settings it recommends. Every request is a
few tokens long; nothing is retried.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from chatlane.errors import ChatlaneError

if TYPE_CHECKING:
    from chatlane.backends.transport import Transport
    from chatlane.formats.base import PromptFormat
    from chatlane.wire.completions import CompletionDialect

__all__ = ["Check", "Report", "diagnose"]

Status = Literal["ok", "warn", "fail", "skip"]

_PROMPT = "Count from one to twenty, in words."


@dataclass(frozen=True, slots=True)
class Check:
    """One finding: what was checked, how it went, and what was seen."""

    name: str
    status: Status
    detail: str


@dataclass(slots=True)
class Report:
    """What `diagnose` found (see the module docstring)."""

    url: str
    chat: bool = False
    """An OpenAI-compatible ``/chat/completions`` endpoint answered."""
    completion: CompletionDialect | None = None
    """The raw completion dialect that answered (``openai``, ``llama.cpp``, ``aleph-alpha``)."""
    chat_dialect: str = "openai"
    models: tuple[str, ...] = ()
    model: str | None = None
    format: str | None = None
    """The registered prompt format chatlane would render raw prompts in."""
    format_detected: bool = False
    server_adds_bos: bool | None = None
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, status: Status, detail: str) -> None:
        self.checks.append(Check(name, status, detail))

    @property
    def recommended(self) -> dict[str, str]:
        """Python constructors for the backends that work here, by kind."""
        out: dict[str, str] = {}
        model = f", model={self.model!r}" if self.model else ""
        if self.chat:
            dialect = f", dialect={self.chat_dialect!r}" if self.chat_dialect != "openai" else ""
            out["chat"] = f"OpenAIChat({_v1(self.url)!r}{dialect}{model})"
        if self.completion is not None:
            base = _v1(self.url) if self.completion == "openai" else _root(self.url)
            parts = [repr(base), f"format={self.format!r}", f"dialect={self.completion!r}"]
            if self.server_adds_bos is not None:
                parts.append(f"server_adds_bos={self.server_adds_bos}")
            out["completion"] = f"CompletionChat({', '.join(parts)}{model})"
        return out

    @property
    def ok(self) -> bool:
        """No check failed."""
        return bool(self.chat or self.completion) and all(c.status != "fail" for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "endpoints": {"chat": self.chat, "completion": self.completion},
            "models": list(self.models),
            "model": self.model,
            "format": self.format,
            "format_detected": self.format_detected,
            "checks": [dataclasses.asdict(c) for c in self.checks],
            "recommended": self.recommended,
            "ok": self.ok,
        }

    def to_text(self) -> str:
        kinds = []
        if self.chat:
            kinds.append(f"chat ({_v1(self.url)}/chat/completions, dialect {self.chat_dialect})")
        if self.completion is not None:
            kinds.append(f"completion (dialect {self.completion})")
        lines = [f"chatlane doctor {self.url}", ""]
        lines.append(f"  endpoints  {' and '.join(kinds) if kinds else 'none answered'}")
        if self.model:
            how = "detected from the model id" if self.format_detected else "the default"
            lines.append(f"  model      {self.model} (format {self.format}, {how})")
        lines.append("")
        width = max((len(c.name) for c in self.checks), default=0)
        for c in self.checks:
            lines.append(f"  {c.status:<4}  {c.name:<{width}}  {c.detail}")
        if self.recommended:
            lines += ["", "recommended:"]
            lines += [f"  {line}" for line in self.recommended.values()]
        return "\n".join(lines) + "\n"


def _root(url: str) -> str:
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _v1(url: str) -> str:
    return _root(url) + "/v1"


def diagnose(
    url: str,
    *,
    api_key: str | None = None,
    model: str | None = None,
    format: str | None = None,
    timeout: float = 60.0,
) -> Report:
    """Probe the server at ``url`` (see the module docstring).

    Args:
        url: the server's base URL (with or without ``/v1``).
        api_key: sent as a bearer token; never shown in the report.
        model: the model to ask for (default: the first the server lists).
        format: the prompt format for raw prompts (default: detected from the model id).
        timeout: seconds each request may take.
    """
    from chatlane.backends.transport import RetryPolicy, Timeouts, Transport

    report = Report(url=url.rstrip("/"))
    transport = Transport(
        _root(url),
        api_key=api_key,
        timeouts=Timeouts(total=timeout, read=timeout, idle=timeout),
        retry=RetryPolicy(max_retries=0),
    )
    with transport:
        _find_model(report, transport, model)
        _find_format(report, format)
        _find_chat(report, transport)
        _find_completion(report, transport)
        if report.chat or report.completion:
            options = {"api_key": api_key, "timeouts": transport.timeouts, "retry": transport.retry}
            _check_backends(report, transport, options)
        else:
            report.add("endpoints", "fail", "neither a chat nor a completion endpoint answered")
    return report


def _try(call: Callable[[], Any]) -> tuple[Any, ChatlaneError | None]:
    try:
        return call(), None
    except ChatlaneError as e:
        return None, e


def _find_model(report: Report, transport: Transport, model: str | None) -> None:
    listed, error = _try(lambda: transport.get_json("v1/models"))
    data = listed.get("data") if isinstance(listed, Mapping) else None
    if isinstance(data, list):
        report.models = tuple(str(m["id"]) for m in data if isinstance(m, Mapping) and "id" in m)
        owners = {str(m.get("owned_by", "")).lower() for m in data if isinstance(m, Mapping)}
        if "vllm" in owners:
            report.chat_dialect = "vllm"
        elif owners & {"llamacpp", "me"}:
            # llama.cpp's llama-server says "llamacpp", llama-cpp-python's server "me".
            report.chat_dialect = "llama.cpp"
    report.model = model or (report.models[0] if report.models else None)
    if report.models:
        report.add("models", "ok", f"{len(report.models)} listed: {', '.join(report.models[:5])}")
    else:
        reason = f" ({error})" if error is not None else ""
        report.add("models", "warn", f"GET /v1/models listed no models{reason}")


def _find_format(report: Report, name: str | None) -> None:
    from chatlane import formats
    from chatlane.formats.base import ModelInfo

    if name is not None:
        report.format = name
        return
    found = formats.detect(ModelInfo(model_id=report.model)) if report.model else None
    if found is not None:
        # The registered name whose format the detected one is (the most specific name).
        for candidate in sorted(formats.names(), key=len, reverse=True):
            if formats.get(candidate).name == found.name:
                report.format, report.format_detected = candidate, True
                return
    report.format = formats.DEFAULT


def _format(report: Report) -> PromptFormat:
    from chatlane import formats

    assert report.format is not None
    return formats.get(report.format)


def _chat_body(report: Report, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": "Say OK."}],
        "max_tokens": 2,
        **fields,
    }
    if report.model:
        body["model"] = report.model
    return body


def _find_chat(report: Report, transport: Transport) -> None:
    _, error = _try(lambda: transport.post_json("v1/chat/completions", _chat_body(report)))
    report.chat = error is None
    if error is not None:
        report.add("chat endpoint", "skip", f"no chat endpoint: {_short(error)}")


_COMPLETION_PATHS: tuple[tuple[CompletionDialect, str], ...] = (
    ("openai", "v1/completions"),
    ("llama.cpp", "completion"),
    ("aleph-alpha", "complete"),
)


def _find_completion(report: Report, transport: Transport) -> None:
    from chatlane.request import ChatRequest
    from chatlane.wire.completions import encode_request

    request = ChatRequest.coerce("x", max_tokens=1, model=report.model)
    errors = []
    for dialect, path in _COMPLETION_PATHS:
        body = encode_request("Hello", request, dialect, stop=(), model=report.model)

        def post(path: str = path, body: dict[str, Any] = body) -> Any:
            return transport.post_json(path, body)

        _, error = _try(post)
        if error is None:
            report.completion = dialect
            return
        errors.append(f"/{path}: {_short(error)}")
    report.add(
        "completion endpoint", "skip", "no raw completion endpoint (" + "; ".join(errors) + ")"
    )


def _check_backends(report: Report, transport: Transport, options: dict[str, Any]) -> None:
    """The checks through chatlane's own backends, built as the report recommends."""
    from chatlane.backends.completion import CompletionChat
    from chatlane.backends.openai_chat import OpenAIChat

    if report.completion is not None:
        _check_bos(report, transport)
        base = _v1(report.url) if report.completion == "openai" else _root(report.url)
        with CompletionChat(
            base,
            _format(report),
            dialect=report.completion,
            model=report.model,
            server_adds_bos=report.server_adds_bos,
            **options,
        ) as llm:
            _check_one(report, "completion", llm)
    if report.chat:
        with OpenAIChat(
            _v1(report.url), dialect=report.chat_dialect, model=report.model, **options
        ) as chat:
            _check_one(report, "chat", chat)
            _check_tool_calls(report, chat)


def _check_bos(report: Report, transport: Transport) -> None:
    """Does the server add the begin-of-sequence token to a text prompt itself? Counted from
    the prompt tokens it reports for a text chatlane tokenizes too."""
    from chatlane.request import ChatRequest
    from chatlane.wire.completions import decode_response, encode_request

    assert report.completion is not None
    fmt = _format(report)
    if fmt.tokenizer is None or not fmt.begin_text:
        report.add("BOS", "skip", f"the format {report.format} has no begin-of-sequence token")
        return
    text = "Hello there"
    expected = len(fmt.tokenizer.encode(text))
    path = dict(_COMPLETION_PATHS)[report.completion]
    request = ChatRequest.coerce("x", max_tokens=1, model=report.model)
    body = encode_request(text, request, report.completion, stop=(), model=report.model)
    raw, error = _try(lambda: transport.post_json(path, body))
    usage = None
    if error is None:
        pieces = decode_response(raw, report.completion)
        usage = next((p.usage for p in pieces if getattr(p, "usage", None) is not None), None)
    if usage is None or not usage.prompt_tokens:
        report.add("BOS", "warn", "the server reports no prompt tokens: cannot tell; "
                   "send prompts as token ids (prompt_as='tokens') to be safe")  # fmt: skip
        return
    counted = usage.prompt_tokens
    if counted == expected + 1:
        report.server_adds_bos = True
        report.add("BOS", "ok", f"the server adds {fmt.begin_text} to text prompts itself; "
                   "chatlane leaves it out of the text (server_adds_bos=True)")  # fmt: skip
    elif counted == expected:
        report.server_adds_bos = False
        report.add("BOS", "ok", "the server takes text prompts as written "
                   "(server_adds_bos=False)")  # fmt: skip
    else:
        report.add("BOS", "warn", f"{counted} prompt tokens for text of {expected}: the "
                   f"server's tokenizer differs from the {report.format} format's")  # fmt: skip


def _check_one(report: Report, kind: str, llm: Any) -> None:
    """max_tokens, usage, and streamed == whole, through chatlane's own backend."""
    params: dict[str, Any] = {"max_tokens": 4, "temperature": 0.0, "seed": 7}
    whole, error = _try(lambda: llm.chat(_PROMPT, **params))
    if error is not None:
        report.add(f"{kind}: answer", "fail", f"chatlane's backend failed: {_short(error)}")
        return
    streamed, serror = _try(lambda: llm.stream(_PROMPT, **params).response)
    generated = whole.usage.completion_tokens if whole.usage is not None else None
    if generated is None:
        report.add(f"{kind}: max_tokens", "warn", "no usage reported: cannot count the tokens")
    elif generated <= 4:
        report.add(f"{kind}: max_tokens", "ok", f"honoured (asked for 4, got {generated})")
    else:
        report.add(f"{kind}: max_tokens", "fail",
                   f"ignored: asked for 4 tokens, the server generated {generated}")  # fmt: skip
    usage_stream = streamed.usage if streamed is not None else None
    seen = [
        name for name, u in (("whole", whole.usage), ("streamed", usage_stream)) if u is not None
    ]
    if len(seen) == 2:
        report.add(f"{kind}: usage", "ok", "reported, streamed and not")
    else:
        missing = {"whole", "streamed"} - set(seen)
        report.add(
            f"{kind}: usage", "warn", f"not reported for {' and '.join(sorted(missing))} answers"
        )
    if serror is not None:
        report.add(f"{kind}: streaming", "fail", f"the streamed answer failed: {_short(serror)}")
    elif streamed.text == whole.text:
        report.add(
            f"{kind}: streaming", "ok", "streamed and whole answers agree (seed, temperature 0)"
        )
    else:
        report.add(f"{kind}: streaming", "warn",
                   f"streamed and whole answers differ: {streamed.text[:40]!r} vs {whole.text[:40]!r}")  # fmt: skip


def _weather_tool() -> Any:
    from chatlane.tools import Tool

    return Tool.from_schema(
        "get_weather",
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "The current weather in a city.",
    )


def _check_tool_calls(report: Report, chat: Any) -> None:
    """Tool calls in ``tool_calls`` or in ``content``, and parallel calls (chat endpoint)."""
    from chatlane.request import ChatRequest

    tool = _weather_tool()
    question = "Call get_weather for Paris and for Rome, both at once."
    response, error = _try(
        lambda: chat.chat(
            question, tools=[tool], tool_choice="required", max_tokens=80, temperature=0.0, seed=7
        )
    )
    if error is not None:
        report.add("tool calls", "fail", f"a request with tools failed: {_short(error)}")
        return
    calls = response.message.tool_calls
    if calls:
        report.add("tool calls", "ok", f"in tool_calls ({', '.join(c.name for c in calls)})")
        if len(calls) > 1:
            report.add("parallel calls", "ok", f"{len(calls)} calls in one turn")
        else:
            report.add("parallel calls", "warn", "one call per turn (asked for two)")
        return
    # No calls: did the server leave them in the text? Read it as the model's own format.
    leaked = _format(report).parse(response.text, ChatRequest.coerce(question, tools=[tool]))
    if leaked.tool_calls:
        report.add("tool calls", "fail", f"leak into content: {len(leaked.tool_calls)} call(s) "
                   "left as text; use CompletionChat, which parses them itself")  # fmt: skip
    else:
        report.add("tool calls", "warn", "the model answered without a call: "
                   f"{response.text[:60]!r}")  # fmt: skip


def _short(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."
