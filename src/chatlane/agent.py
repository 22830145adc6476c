"""The agent loop: run the model's tool calls until it answers.

`run` (and its async twin `arun`) sends the conversation, runs the calls the model makes
with the Python functions behind its tools, appends the results as tool messages tied to
their call ids, and asks again, until the model answers without a call or a limit is hit::

    result = chatlane.run(backend, "What is 17 * 23?", tools=[multiply])
    result.text          # the final answer
    result.messages      # the whole new conversation (the caller's list is never changed)
    result.stop_reason   # StopReason.ANSWERED, or the limit that ended the run

`run_stream` / `arun_stream` give the same run as a stream of events: the model's own
`ChatEvent`s as they arrive, plus `StepStarted`, `StepFinished`, `ToolRunStarted`,
`ToolRunFinished`, `OutputRejected` and `RunFinished`, for a CLI or a UI to show progress.

What the loop guarantees:

- Parallel calls of one turn run concurrently (a thread pool for sync functions, tasks for
  async ones); their results go back in call order.
- Unknown tools, arguments that are not JSON or do not validate against the tool's schema,
  and exceptions raised by a tool become tool messages that say what went wrong, so the model
  can correct itself; ``max_tool_failures`` failed calls in a row end the run.
- Limits (``max_steps`` model calls, a ``deadline`` in seconds, a ``token_budget``, a
  per-call ``tool_timeout``) end the run with a result that says which limit was hit and
  keeps everything so far. Calls the model made when no further model call is allowed do
  not run; they are in ``result.pending_calls``, and passing ``result.messages`` to `run`
  again runs them first and continues.
- A ``before_tool_call`` hook sees each call before it runs and may approve, change or cancel
  it, or stop the run (human in the loop).
- With ``response_format=Model`` the run ends with a validated ``Model`` in ``result.output``;
  an answer that does not validate is sent back with the errors (``output_retries`` times,
  replacing the previous failed attempt rather than growing the conversation).
- ``code_interpreter`` runs only when enabled, in a sandbox (see `Sandbox`); the result's
  ``sandbox_isolation`` says which isolation it ran under;
  ``brave_search`` and ``wolfram_alpha`` run only through functions the caller provides.

A failure of the backend (a connection, an HTTP error, a broken stream) ends the run with an
`AgentError` whose ``result`` holds everything up to that point.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import functools
import inspect
import json
import queue
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Sequence,
)
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, ClassVar, Literal, Self, TypeAlias

from chatlane._sandbox import Isolation, Sandbox, SandboxResult
from chatlane.backends.base import Backend
from chatlane.errors import ChatlaneError, InputError, StreamInterrupted, StructuredOutputError
from chatlane.events import ChatEvent
from chatlane.messages import Image, Message, Role, Text, ToolCall
from chatlane.request import ChatRequest
from chatlane.response import ChatResponse, FinishReason, Usage
from chatlane.tools import BUILTIN_TOOLS, Tool

__all__ = [
    "AgentError",
    "AgentEvent",
    "AgentResult",
    "AgentStream",
    "ApproveCall",
    "AsyncAgentStream",
    "CancelCall",
    "ChangeCall",
    "OutputRejected",
    "RunFinished",
    "RunLimits",
    "Sandbox",
    "SandboxResult",
    "StepFinished",
    "StepStarted",
    "StopReason",
    "StopRun",
    "ToolCallDecision",
    "ToolCallHook",
    "ToolRun",
    "ToolRunFinished",
    "ToolRunStarted",
    "arun",
    "arun_stream",
    "run",
    "run_stream",
]


class StopReason(enum.StrEnum):
    """Why a run ended."""

    ANSWERED = "answered"
    """The model answered without calling a tool (and the answer validated, if asked)."""
    MAX_STEPS = "max_steps"
    """``max_steps`` model calls were made."""
    DEADLINE = "deadline"
    """The run's ``deadline`` passed."""
    TOKEN_BUDGET = "token_budget"
    """The tokens used reached the ``token_budget``."""
    TOOL_FAILURES = "tool_failures"
    """``max_tool_failures`` tool calls in a row failed."""
    INVALID_OUTPUT = "invalid_output"
    """The answer still did not validate against ``response_format`` after the retries."""
    STOPPED = "stopped"
    """A ``before_tool_call`` hook stopped the run."""
    CLOSED = "closed"
    """The caller closed the run's stream before it ended."""
    FAILED = "failed"
    """The backend failed (the result of the `AgentError` raised)."""


ToolRunStatus: TypeAlias = Literal["ok", "error", "invalid", "cancelled", "timeout"]


@dataclass(frozen=True, slots=True)
class ToolRun:
    """One tool call as the loop handled it, and the tool message the model received."""

    step: int
    """The model call (1-based) that made the call; 0 for calls left unanswered in the input."""
    index: int
    """The call's position among its turn's calls."""
    call: ToolCall
    """The call as it ran (with the arguments a hook set, if one changed them)."""
    status: ToolRunStatus
    """``ok``; ``error`` (the tool raised, or the code failed); ``invalid`` (unknown tool or
    bad arguments); ``cancelled`` (by a hook); ``timeout`` (``tool_timeout`` or ``deadline``)."""
    message: Message
    """The tool message sent back to the model."""
    value: Any = None
    """What the tool's function returned."""
    error: BaseException | None = None
    """The exception the tool raised, kept for the caller (the model only sees its text)."""
    duration: float = 0.0
    """Seconds the function ran."""
    original: ToolCall | None = None
    """The model's own call, when a hook changed it."""

    @property
    def ok(self) -> bool:
        """Whether the tool ran and returned a result."""
        return self.status == "ok"

    @property
    def content(self) -> str:
        """The text the model received."""
        return self.message.text


# Hook decisions ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApproveCall:
    """Run the call as the model made it (returning None from a hook means the same)."""


@dataclass(frozen=True, slots=True)
class ChangeCall:
    """Run the call with other arguments (validated again before it runs).

    The conversation then shows the call with these arguments, so the model reads a result
    that matches its call; the model's own call stays in ``result.responses``.
    """

    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CancelCall:
    """Do not run the call; the model reads ``message`` as its result."""

    message: str = "The user declined this tool call; it did not run."


@dataclass(frozen=True, slots=True)
class StopRun:
    """Do not run this turn's calls and end the run (``StopReason.STOPPED``)."""

    reason: str = "stopped by the user"


ToolCallDecision: TypeAlias = ApproveCall | ChangeCall | CancelCall | StopRun | bool | None
"""What a `ToolCallHook` returns: ``None``/``True`` approve, ``False`` cancels."""

ToolCallHook: TypeAlias = Callable[[ToolCall, Tool], ToolCallDecision | Awaitable[ToolCallDecision]]
"""Called with each valid call and its tool before the call runs (async hooks need `arun`)."""


# Events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepStarted:
    """A model call begins: the request it sends."""

    step: int
    request: ChatRequest
    kind: ClassVar[Literal["step_started"]] = "step_started"


@dataclass(frozen=True, slots=True)
class StepFinished:
    """A model call ended: its whole response (partial when the deadline cut it)."""

    step: int
    response: ChatResponse
    kind: ClassVar[Literal["step_finished"]] = "step_finished"


@dataclass(frozen=True, slots=True)
class ToolRunStarted:
    """A tool's function started running (hooks have approved it)."""

    step: int
    index: int
    call: ToolCall
    kind: ClassVar[Literal["tool_run_started"]] = "tool_run_started"


@dataclass(frozen=True, slots=True)
class ToolRunFinished:
    """A call is done: its status, result, duration and the message the model receives."""

    run: ToolRun
    kind: ClassVar[Literal["tool_run_finished"]] = "tool_run_finished"


@dataclass(frozen=True, slots=True)
class OutputRejected:
    """An answer did not validate against ``response_format``; ``retry`` says if it is
    sent back to the model."""

    step: int
    error: StructuredOutputError
    retry: bool
    kind: ClassVar[Literal["output_rejected"]] = "output_rejected"


@dataclass(frozen=True, slots=True)
class RunFinished:
    """The run ended; the last event of every run."""

    result: AgentResult
    kind: ClassVar[Literal["run_finished"]] = "run_finished"


AgentEvent: TypeAlias = (
    ChatEvent
    | StepStarted
    | StepFinished
    | ToolRunStarted
    | ToolRunFinished
    | OutputRejected
    | RunFinished
)
"""Everything a run streams: the model's events and the loop's own."""


# The result --------------------------------------------------------------------------------

_NO_OUTPUT: Any = object()


@dataclass(frozen=True, slots=True)
class AgentResult:
    """Everything a run produced."""

    messages: tuple[Message, ...]
    """The whole conversation: the caller's messages, then the new ones."""
    responses: tuple[ChatResponse, ...]
    """Every model call's response, in order (answers that were rejected and retried too)."""
    tool_runs: tuple[ToolRun, ...]
    """Every tool call the loop handled, in order."""
    usage: Usage
    """The usage of all responses, summed."""
    stop_reason: StopReason
    detail: str
    """Why the run ended, in a sentence."""
    input_count: int = 0
    """How many of ``messages`` the caller gave."""
    pending_calls: tuple[ToolCall, ...] = ()
    """Calls the model made that did not run because a limit ended the run."""
    output_error: StructuredOutputError | None = None
    """Why the last answer did not validate against ``response_format``."""
    sandbox_isolation: Isolation | None = None
    """Which isolation ``code_interpreter``'s code ran under ("namespaces" or "limits-only"),
    or None when the run had no code interpreter."""
    _output: Any = field(default=_NO_OUTPUT, repr=False)

    @property
    def new_messages(self) -> tuple[Message, ...]:
        """The messages the run added."""
        return self.messages[self.input_count :]

    @property
    def completed(self) -> bool:
        """Whether the model answered (and the answer validated, when a format was asked)."""
        return self.stop_reason is StopReason.ANSWERED

    @property
    def response(self) -> ChatResponse | None:
        """The last model response."""
        return self.responses[-1] if self.responses else None

    @property
    def text(self) -> str:
        """The last assistant message's text: the answer when the run completed."""
        for message in reversed(self.new_messages):
            if message.role is Role.ASSISTANT:
                return message.text
        return ""

    @property
    def steps(self) -> int:
        """How many model calls the run made."""
        return len(self.responses)

    @property
    def output(self) -> Any:
        """The validated answer when ``response_format`` was given (a model instance for a
        Pydantic model, else the JSON value).

        Raises `StructuredOutputError` when the last answer did not validate, and `AgentError`
        when the run ended without an answer or no format was asked for.
        """
        if self.output_error is not None:
            raise self.output_error
        if self._output is _NO_OUTPUT:
            if self.stop_reason is StopReason.ANSWERED:
                raise AgentError("the run was given no response_format; read .text", result=self)
            raise AgentError(f"the run ended without an answer: {self.detail}", result=self)
        return self._output


class AgentError(ChatlaneError):
    """A run could not go on (the backend failed) or has no output to give.

    Attributes:
        result: everything the run produced up to that point.
    """

    def __init__(self, message: str, *, result: AgentResult) -> None:
        super().__init__(message)
        self.result = result


# The loop's state, shared by the sync and async drivers ------------------------------------


@dataclass(slots=True)
class _Job:
    """A call of this turn on its way to a `ToolRun`."""

    step: int
    index: int
    call: ToolCall
    original: ToolCall
    tool: Tool | None = None
    arguments: Any = None
    outcome: ToolRun | None = None
    started: float | None = None


@dataclass(frozen=True, slots=True)
class _Settings:
    max_steps: int
    deadline: float | None
    token_budget: int | None
    max_tool_failures: int
    tool_timeout: float | None
    output_retries: int
    before_tool_call: ToolCallHook | None
    max_parallel: int
    reset_tool_choice: bool


class _Loop:
    """The run's state and every decision of the loop; the drivers only do the waiting."""

    def __init__(
        self,
        backend: Backend,
        messages: ChatRequest | Sequence[Message] | Message | str,
        tools: Sequence[Tool | Callable[..., Any]],
        response_format: Any,
        code_interpreter: bool | Sandbox | None,
        brave_search: Callable[[str], Any] | None,
        wolfram_alpha: Callable[[str], Any] | None,
        settings: _Settings,
        params: dict[str, Any],
        *,
        asynchronous: bool,
    ) -> None:
        if not isinstance(backend, Backend):
            raise InputError(f"run needs a chatlane Backend, got {type(backend).__name__}")
        _check_settings(settings, asynchronous)
        self.backend = backend
        self.settings = settings
        self.asynchronous = asynchronous
        if isinstance(messages, Message):
            messages = [messages]
        if isinstance(tools, Tool) or callable(tools) or isinstance(tools, str | bytes):
            raise InputError("tools must be a sequence of tools (a list), not a single one")
        given = [_as_tool(t) for t in tools]
        if isinstance(messages, ChatRequest):
            given = [*messages.tools, *given]
        all_tools = self._with_builtins(given, code_interpreter, brave_search, wolfram_alpha)
        if response_format is not None:
            params["response_format"] = response_format
        self.base = ChatRequest.coerce(messages, tools=tuple(all_tools), **params)
        self.tools = {t.name: t for t in self.base.tools}
        self.format = self.base.response_format
        self.conversation: list[Message] = list(self.base.messages)
        self.input_count = len(self.conversation)
        self.retry_extra: list[Message] = []
        self.responses: list[ChatResponse] = []
        self.runs: list[ToolRun] = []
        self.usage = Usage()
        self.step = 0
        self.failures = 0
        self.retries = 0
        self.tool_choice_reset = False
        self.stop: StopReason | None = None
        self.detail = ""
        self.pending: tuple[ToolCall, ...] = ()
        self.output: Any = _NO_OUTPUT
        self.output_error: StructuredOutputError | None = None
        self.started = time.monotonic()
        self.deadline_at = None if settings.deadline is None else self.started + settings.deadline

    # Setup.

    def _with_builtins(
        self,
        tools: list[Tool],
        code_interpreter: bool | Sandbox | None,
        brave_search: Callable[[str], Any] | None,
        wolfram_alpha: Callable[[str], Any] | None,
    ) -> list[Tool]:
        functions: dict[str, Callable[..., Any]] = {}
        self.sandbox_isolation: Isolation | None = None
        if code_interpreter is not None and code_interpreter is not False:
            if code_interpreter is True:
                code_interpreter = Sandbox()
            if not isinstance(code_interpreter, Sandbox):
                raise InputError(
                    "code_interpreter must be True or a chatlane.Sandbox, "
                    f"got {type(code_interpreter).__name__}"
                )
            sandbox = code_interpreter
            self.sandbox_isolation = sandbox.isolation
            functions["code_interpreter"] = sandbox.arun if self.asynchronous else sandbox.run
        for name, function in (("brave_search", brave_search), ("wolfram_alpha", wolfram_alpha)):
            if function is not None:
                if not callable(function):
                    raise InputError(f"{name} must be a function taking the query text")
                functions[name] = function
        result: list[Tool] = []
        for t in tools:
            if t.builtin and t.name in BUILTIN_TOOLS:
                if t.name not in functions and t.function is None:
                    how = (
                        "pass code_interpreter=True (or a Sandbox) to run it in a sandbox"
                        if t.name == "code_interpreter"
                        else f"pass {t.name}=<a function taking the query> to run it"
                    )
                    raise InputError(f"the built-in tool {t.name!r} has nothing to run it: {how}")
                if t.name in functions:
                    t = replace(t, function=functions.pop(t.name))
            elif t.function is None:
                raise InputError(
                    f"tool {t.name!r} has no function to run: build it with @tool or "
                    "Tool.from_function, or give the Tool a function"
                )
            result.append(t)
        for name, function in functions.items():
            if any(t.name == name for t in result):
                raise InputError(f"a tool named {name!r} is given twice")
            result.append(replace(BUILTIN_TOOLS[name], function=function))
        return result

    # Limits.

    def remaining(self) -> float | None:
        """Seconds left before the deadline, or None without one."""
        if self.deadline_at is None:
            return None
        return self.deadline_at - time.monotonic()

    def past_deadline(self) -> bool:
        left = self.remaining()
        return left is not None and left <= 0

    def tokens_used(self) -> int:
        u = self.usage
        return u.total_tokens or (u.prompt_tokens + u.completion_tokens)

    def _limit_reached(self) -> tuple[StopReason, str] | None:
        s = self.settings
        if self.step >= s.max_steps:
            return StopReason.MAX_STEPS, f"the run made its {s.max_steps} model call(s) (max_steps)"
        if s.token_budget is not None and self.tokens_used() >= s.token_budget:
            return (
                StopReason.TOKEN_BUDGET,
                f"the run used {self.tokens_used()} tokens of its budget of {s.token_budget}",
            )
        if self.past_deadline():
            return StopReason.DEADLINE, f"the run's deadline of {s.deadline:g} s passed"
        return None

    def finish(self, reason: StopReason, detail: str) -> None:
        if self.stop is None:
            self.stop, self.detail = reason, detail

    # Steps.

    def begin(self) -> None:
        """Start the run's clock (when the run starts, not when it was set up)."""
        self.started = time.monotonic()
        deadline = self.settings.deadline
        self.deadline_at = None if deadline is None else self.started + deadline

    def unanswered_calls(self) -> list[_Job]:
        """Calls at the end of the caller's conversation that have no result yet (a resumed
        run): they run before the first model call."""
        answered: set[str | None] = set()
        for message in reversed(self.conversation):
            if message.role is Role.TOOL:
                answered.add(message.tool_call_id)
                continue
            if message.role is Role.ASSISTANT and message.tool_calls:
                calls = [c for c in message.tool_calls if c.id not in answered]
                return [self.prepare(0, i, c) for i, c in enumerate(calls)]
            break
        return []

    def next_request(self) -> ChatRequest | None:
        """The next model call's request, or None when the run is over."""
        if self.stop is not None:
            return None
        limit = self._limit_reached()
        if limit is not None:
            self.finish(*limit)
            return None
        self.step += 1
        changes: dict[str, Any] = {"messages": (*self.conversation, *self.retry_extra)}
        if self.tool_choice_reset:
            changes["tool_choice"] = None
        budget = self.settings.token_budget
        if budget is not None:
            # The budget also bounds this call's completion (prompt tokens come on top).
            left = max(1, budget - self.tokens_used())
            if self.base.max_tokens is None or self.base.max_tokens > left:
                changes["max_tokens"] = left
        return replace(self.base, **changes)

    def record_response(self, response: ChatResponse) -> None:
        self.responses.append(response)
        if response.usage is not None:
            self.usage = self.usage + response.usage

    def cut_by_deadline(self, response: ChatResponse) -> None:
        """The deadline passed while the model was answering: keep what arrived, stop."""
        self.record_response(response)
        self.finish(
            StopReason.DEADLINE,
            f"the run's deadline of {self.settings.deadline:g} s passed while the model "
            f"was answering (step {self.step}); its partial answer is the last response",
        )

    def take_response(self, response: ChatResponse) -> tuple[list[_Job], OutputRejected | None]:
        """Decide what a complete response means: calls to run, an answer, or a retry."""
        self.record_response(response)
        message = response.message
        if response.finish_reason == FinishReason.INCOMPLETE:
            # A backend that accepts incomplete streams handed over a cut-off answer: its
            # calls may be cut off too, so none is run (nor offered as pending).
            calls = len(message.tool_calls)
            self.finish(
                StopReason.FAILED,
                "the model's answer was cut off before the server said it was done (finish "
                "reason incomplete); it is the last response"
                + (f", and its {calls} tool call(s) were not run" if calls else ""),
            )
            return [], None
        if message.tool_calls:
            self.conversation.extend(self.retry_extra)
            self.retry_extra = []
            if self.settings.reset_tool_choice:
                self.tool_choice_reset = True
            self.conversation.append(message)
            limit = self._limit_reached()
            if limit is not None:
                # Nobody would read the results: leave the calls for a later run.
                self.pending = message.tool_calls
                reason, detail = limit
                self.finish(
                    reason,
                    f"{detail}; the model's last {len(message.tool_calls)} tool call(s) did not "
                    "run (result.pending_calls): pass result.messages to run() to continue",
                )
                return [], None
            return [self.prepare(self.step, i, c) for i, c in enumerate(message.tool_calls)], None
        if self.format is None:
            self.conversation.append(message)
            self.finish(StopReason.ANSWERED, "the model answered")
            return [], None
        try:
            self.output = self.format.parse(message.text)
        except StructuredOutputError as e:
            self.output_error = e
            can_retry = self.retries < self.settings.output_retries
            if can_retry and self._limit_reached() is None:
                self.retries += 1
                # Only the latest failed attempt goes back: the history does not grow.
                self.retry_extra = [message, Message(Role.USER, _correction(e))]
                return [], OutputRejected(self.step, e, retry=True)
            self.conversation.extend(self.retry_extra)
            self.retry_extra = []
            self.conversation.append(message)
            tries = self.retries + 1
            if can_retry:
                limit = self._limit_reached()
                assert limit is not None
                self.finish(limit[0], f"{limit[1]}; the last answer did not validate: {e}")
            else:
                self.finish(
                    StopReason.INVALID_OUTPUT,
                    f"the answer did not validate after {tries} attempt(s): {e}",
                )
            return [], OutputRejected(self.step, e, retry=False)
        self.output_error = None
        self.retry_extra = []
        self.conversation.append(message)
        self.finish(StopReason.ANSWERED, "the model answered with valid output")
        return [], None

    # Tool calls.

    def prepare(self, step: int, index: int, call: ToolCall) -> _Job:
        """Look the tool up and validate the arguments; a failure becomes the job's outcome."""
        job = _Job(step, index, call, call)
        tool = self.tools.get(call.name)
        if tool is None:
            names = ", ".join(self.tools) or "none"
            job.outcome = self._invalid(
                job, f"Error: there is no tool named {call.name!r}. The tools are: {names}."
            )
            return job
        job.tool = tool
        if call.arguments_error is not None:
            raw = _shorten(call.raw_arguments, 500)
            job.outcome = self._invalid(
                job,
                f"Error: the arguments of this call to {call.name!r} cannot be read "
                f"({call.arguments_error}). They were: {raw}\n"
                "Call the tool again with a JSON object as its arguments.",
            )
            return job
        self._validate(job)
        return job

    def _validate(self, job: _Job) -> None:
        tool = job.tool
        assert tool is not None
        problems: list[str]
        if tool.model is not None:
            from pydantic import ValidationError

            try:
                job.arguments = tool.validate_arguments(job.call.arguments)
                return
            except ValidationError as e:
                problems = [_pydantic_problem(error) for error in e.errors(include_url=False)]
        else:
            from chatlane._jsonschema import validate

            problems = validate(dict(job.call.arguments), tool.parameters)
            if not problems:
                job.arguments = dict(job.call.arguments)
                return
        listed = "\n".join(f"- {p}" for p in problems[:10])
        more = f"\n- ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        job.outcome = self._invalid(
            job,
            f"Error: invalid arguments for tool {tool.name!r}:\n{listed}{more}\n"
            "Call the tool again with corrected arguments.",
        )

    def _invalid(self, job: _Job, text: str) -> ToolRun:
        return self._run(job, "invalid", text)

    def _run(
        self,
        job: _Job,
        status: ToolRunStatus,
        content: Any,
        *,
        value: Any = None,
        error: BaseException | None = None,
        duration: float = 0.0,
    ) -> ToolRun:
        message = Message(Role.TOOL, content, tool_call_id=job.call.id, name=job.call.name)
        return ToolRun(
            job.step,
            job.index,
            job.call,
            status,
            message,
            value,
            error,
            duration,
            job.original if job.original is not job.call else None,
        )

    def decide(self, jobs: list[_Job], index: int, decision: Any) -> bool:
        """Apply a hook's decision to ``jobs[index]``; False when the run is to stop."""
        job = jobs[index]
        if decision is None or decision is True or isinstance(decision, ApproveCall):
            return True
        if decision is False:
            decision = CancelCall()
        if isinstance(decision, CancelCall):
            job.outcome = self._run(job, "cancelled", decision.message)
            return True
        if isinstance(decision, ChangeCall):
            if not isinstance(decision.arguments, dict):
                raise InputError("ChangeCall needs the new arguments as a dict")
            job.call = ToolCall(job.call.id, job.call.name, decision.arguments)
            self._validate(job)
            return True
        if isinstance(decision, StopRun):
            for other in jobs:
                if other.outcome is None:
                    other.outcome = self._run(
                        other, "cancelled", "The run was stopped before this call ran."
                    )
            self.finish(StopReason.STOPPED, f"a hook stopped the run: {decision.reason}")
            return False
        raise InputError(
            "before_tool_call must return None, a bool, ApproveCall, ChangeCall, CancelCall "
            f"or StopRun, got {type(decision).__name__}"
        )

    def call_arguments(self, job: _Job) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """How to call the job's function with its validated arguments."""
        tool = job.tool
        assert tool is not None
        assert tool.function is not None
        arguments = job.arguments
        if tool.builtin and tool.name in BUILTIN_TOOLS:
            # Built-in tools take their one argument (the query, or the code) positionally.
            return (next(iter(arguments.values())),), {}
        if tool.model is not None:
            fields = list(type(arguments).model_fields)
            try:
                parameters = inspect.signature(tool.function).parameters
            except (TypeError, ValueError):
                parameters = {}  # type: ignore[assignment]
            if set(fields) == set(parameters) or len(parameters) != 1:
                return (), {name: getattr(arguments, name) for name in fields}
            return (arguments,), {}
        return (), dict(arguments)

    def completed(self, job: _Job, value: Any, error: BaseException | None, took: float) -> ToolRun:
        """The `ToolRun` of a function that returned ``value`` or raised ``error``."""
        name = job.call.name
        if error is not None:
            text = (
                f"Error: tool {name!r} raised {type(error).__name__}: {_shorten(str(error), 2000)}"
            )
            return self._run(job, "error", text, error=error, duration=took)
        if isinstance(value, SandboxResult):
            status: ToolRunStatus = "ok" if value.ok else "error"
            return self._run(job, status, value.to_text(), value=value, duration=took)
        try:
            content = _content(value)
        except (TypeError, ValueError) as e:
            text = f"Error: tool {name!r} returned a value of type {type(value).__name__}, which cannot be sent as text or JSON"
            return self._run(job, "error", text, value=value, error=e, duration=took)
        return self._run(job, "ok", content, value=value, duration=took)

    def timed_out(self, job: _Job, *, by_deadline: bool) -> ToolRun:
        took = 0.0 if job.started is None else time.monotonic() - job.started
        if by_deadline:
            text = f"Error: the run's time limit ran out before tool {job.call.name!r} finished."
        else:
            text = (
                f"Error: tool {job.call.name!r} did not finish within "
                f"{self.settings.tool_timeout:g} s."
            )
        return self._run(job, "timeout", text, duration=took)

    def expired(self, jobs: list[_Job], done: dict[int, ToolRun]) -> list[ToolRun]:
        """Mark the calls whose time ran out (the deadline, or their ``tool_timeout``)."""
        now = time.monotonic()
        runs: list[ToolRun] = []
        deadline = self.past_deadline()
        for job in jobs:
            if job.index in done:
                continue
            timeout = self.settings.tool_timeout
            own = job.started is not None and timeout is not None and now - job.started >= timeout
            if deadline or own:
                run = self.timed_out(job, by_deadline=deadline and not own)
                done[job.index] = run
                runs.append(run)
        if deadline:
            self.finish(
                StopReason.DEADLINE,
                f"the run's deadline of {self.settings.deadline:g} s passed while tools ran",
            )
        return runs

    def wait_time(self, jobs: list[_Job], done: dict[int, ToolRun]) -> float | None:
        """How long to wait for the next tool event before a limit must be checked."""
        waits: list[float] = []
        left = self.remaining()
        if left is not None:
            waits.append(left)
        timeout = self.settings.tool_timeout
        if timeout is not None:
            now = time.monotonic()
            waits += [
                job.started + timeout - now
                for job in jobs
                if job.started is not None and job.index not in done
            ]
        return max(0.0, min(waits)) if waits else None

    def record_runs(self, jobs: list[_Job], done: dict[int, ToolRun]) -> None:
        """Append the results in call order and count failures in a row."""
        message = None
        for job in sorted(jobs, key=lambda j: j.index):
            run = done[job.index]
            self.runs.append(run)
            if job.call is not job.original and job.step > 0:
                message = message or self.conversation[-1]
            if run.status in ("error", "invalid", "timeout"):
                self.failures += 1
            elif run.status == "ok":
                self.failures = 0
        if message is not None:
            # A hook changed arguments: the conversation shows the calls as they ran.
            changed = {job.index: job.call for job in jobs}
            calls = tuple(changed.get(i, c) for i, c in enumerate(message.tool_calls))
            self.conversation[-1] = replace(message, tool_calls=calls)
        self.conversation.extend(done[job.index].message for job in sorted(jobs, key=_index))
        limit = self.settings.max_tool_failures
        if self.failures >= limit:
            failed = [r for r in self.runs if r.status in ("error", "invalid", "timeout")]
            last = failed[-1].content if failed else ""
            self.finish(
                StopReason.TOOL_FAILURES,
                f"{self.failures} tool call(s) in a row failed (max_tool_failures={limit}); "
                f"the last: {_shorten(last, 300)}",
            )

    def result(self) -> AgentResult:
        stop = self.stop or StopReason.CLOSED
        detail = self.detail or "the run's stream was closed before the run ended"
        return AgentResult(
            messages=(*self.conversation, *self.retry_extra),
            responses=tuple(self.responses),
            tool_runs=tuple(self.runs),
            usage=self.usage,
            stop_reason=stop,
            detail=detail,
            input_count=self.input_count,
            pending_calls=self.pending,
            output_error=self.output_error,
            sandbox_isolation=self.sandbox_isolation,
            _output=self.output,
        )

    def backend_failed(self, error: Exception) -> AgentError:
        if isinstance(error, StreamInterrupted):
            self.record_response(error.partial)
        where = f"step {self.step}" if self.step else "the start"
        self.finish(StopReason.FAILED, f"the backend failed at {where}: {error}")
        result = self.result()
        return AgentError(f"the run stopped at {where}: {error}", result=result)


def _function(job: _Job) -> Callable[..., Any]:
    if job.tool is None or job.tool.function is None:
        raise InputError(f"tool {job.call.name!r} has no function to run")
    return job.tool.function


def _as_tool(value: Any) -> Tool:
    if isinstance(value, Tool):
        return value
    if callable(value):
        return Tool.from_function(value)
    raise InputError(f"tools must be Tool objects or functions, got {type(value).__name__}")


def _index(job: _Job) -> int:
    return job.index


def _check_settings(s: _Settings, asynchronous: bool) -> None:
    if not (isinstance(s.max_steps, int) and s.max_steps >= 1):
        raise InputError(f"max_steps must be at least 1, got {s.max_steps!r}")
    for name in ("deadline", "tool_timeout"):
        value = getattr(s, name)
        if value is not None and not (isinstance(value, int | float) and value > 0):
            raise InputError(f"{name} must be a positive number of seconds, got {value!r}")
    if s.token_budget is not None and not (isinstance(s.token_budget, int) and s.token_budget > 0):
        raise InputError(f"token_budget must be a positive int, got {s.token_budget!r}")
    if not (isinstance(s.max_tool_failures, int) and s.max_tool_failures >= 1):
        raise InputError(f"max_tool_failures must be at least 1, got {s.max_tool_failures!r}")
    if not (isinstance(s.output_retries, int) and s.output_retries >= 0):
        raise InputError(f"output_retries must be 0 or more, got {s.output_retries!r}")
    if not (isinstance(s.max_parallel, int) and s.max_parallel >= 1):
        raise InputError(f"max_parallel must be at least 1, got {s.max_parallel!r}")
    hook = s.before_tool_call
    if hook is not None:
        if not callable(hook):
            raise InputError("before_tool_call must be a function")
        if not asynchronous and inspect.iscoroutinefunction(hook):
            raise InputError("before_tool_call is an async function: use arun / arun_stream")


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more)"


def _pydantic_problem(error: Any) -> str:
    location = ".".join(str(part) for part in error.get("loc", ())) or "(arguments)"
    problem = f"{location}: {error.get('msg', 'invalid')}"
    if error.get("type") != "missing" and "input" in error:
        problem += f" (got {_shorten(repr(error['input']), 100)})"
    return problem


def _correction(error: StructuredOutputError) -> str:
    problems: list[str] = []
    for item in error.errors[:10]:
        problems.append(_pydantic_problem(item) if isinstance(item, dict) else str(item))
    listed = "\n".join(f"- {p}" for p in problems) or f"- {error}"
    return (
        "Your answer does not match the required output format:\n"
        f"{listed}\n"
        "Answer again with only the JSON value, corrected to match the schema."
    )


def _content(value: Any) -> str | tuple[Text | Image, ...]:
    """A tool's return value as tool message content: text, parts, or JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, Text | Image):
        return (value,)
    if (
        isinstance(value, list | tuple)
        and value
        and all(isinstance(v, Text | Image) for v in value)
    ):
        return tuple(value)
    if value is None:
        return "null"
    dump = getattr(value, "model_dump_json", None)
    if callable(dump):
        return str(dump())
    try:
        return json.dumps(value, ensure_ascii=False)
    except TypeError:
        # Dataclasses, dates, sets, models inside lists: pydantic knows how to send them.
        import pydantic_core

        return pydantic_core.to_json(value).decode()


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class _Workers:
    """Daemon threads that run sync tool functions, kept between runs.

    Daemon threads rather than a pool of the standard library: a tool that hangs past its
    timeout holds no slot of the run (a new thread takes the next call) and cannot hold up
    the interpreter's exit (a ThreadPoolExecutor's threads are joined at exit). Starting a
    thread costs about a millisecond on a busy machine, so idle threads wait for the next
    call and leave after a minute without one.
    """

    IDLE_SECONDS = 60.0

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # idle threads not yet promised to a submitted task

    def submit(self, task: Callable[[], None]) -> None:
        with self._lock:
            if self._idle > 0:
                self._idle -= 1
                start = False
            else:
                start = True
        self._tasks.put(task)
        if start:
            threading.Thread(target=self._work, name="chatlane-tool", daemon=True).start()

    def _work(self) -> None:
        while True:
            try:
                task = self._tasks.get(timeout=self.IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # no task is promised to this thread: leave
                        self._idle -= 1
                        return
                continue
            with contextlib.suppress(BaseException):  # tasks report their own errors
                task()
            with self._lock:
                self._idle += 1


_WORKERS = _Workers()


# The sync driver ---------------------------------------------------------------------------


def _drive(loop: _Loop) -> Generator[AgentEvent, None, AgentResult]:
    loop.begin()
    jobs = loop.unanswered_calls()
    if jobs:
        yield from _sync_tools(loop, jobs)
    while (request := loop.next_request()) is not None:
        yield StepStarted(loop.step, request)
        try:
            stream = loop.backend.stream(request)
        except Exception as e:
            raise loop.backend_failed(e) from e
        cut = False
        try:
            while True:
                try:
                    event = next(stream)
                except StopIteration:
                    break
                except Exception as e:
                    raise loop.backend_failed(e) from e
                yield event
                if loop.past_deadline():
                    cut = True
                    break
            response = stream.partial() if cut else stream.response
        finally:
            stream.close()
        if cut:
            loop.cut_by_deadline(response)
            yield StepFinished(loop.step, response)
            break
        jobs, rejected = loop.take_response(response)
        yield StepFinished(loop.step, response)
        if rejected is not None:
            yield rejected
        if jobs:
            yield from _sync_tools(loop, jobs)
    result = loop.result()
    yield RunFinished(result)
    return result


def _sync_tools(loop: _Loop, jobs: list[_Job]) -> Iterator[AgentEvent]:
    hook = loop.settings.before_tool_call
    for i, job in enumerate(jobs):
        if hook is None or job.outcome is not None:
            continue
        assert job.tool is not None
        decision = hook(job.call, job.tool)
        if inspect.isawaitable(decision):
            with contextlib.suppress(AttributeError):
                decision.close()  # type: ignore[attr-defined]
            raise InputError("before_tool_call returned an awaitable: use arun / arun_stream")
        if not loop.decide(jobs, i, decision):
            break
    done: dict[int, ToolRun] = {}
    for job in jobs:
        if job.outcome is not None:
            done[job.index] = job.outcome
            yield ToolRunFinished(job.outcome)
    runnable = [job for job in jobs if job.outcome is None]
    if runnable:
        yield from _sync_execute(loop, runnable, done)
    loop.record_runs(jobs, done)


def _sync_execute(loop: _Loop, jobs: list[_Job], done: dict[int, ToolRun]) -> Iterator[AgentEvent]:
    messages: queue.SimpleQueue[tuple[str, _Job, float, Any, BaseException | None]]
    messages = queue.SimpleQueue()

    def work(job: _Job) -> None:
        started = time.monotonic()
        messages.put(("started", job, started, None, None))
        value: Any = None
        error: BaseException | None = None
        try:
            args, kwargs = loop.call_arguments(job)
            value = _function(job)(*args, **kwargs)
            if inspect.isawaitable(value):
                # An async tool in a sync run: its own event loop, in this worker thread.
                value = asyncio.run(_awaited(value))
        except BaseException as e:  # a tool's SystemExit too must not end the run
            error = e
        messages.put(("finished", job, time.monotonic() - started, value, error))

    # See _Workers: a call that hangs past its timeout keeps no slot of this run.
    waiting = list(jobs)
    running: set[int] = set()

    def start_more() -> None:
        while waiting and len(running) < loop.settings.max_parallel:
            job = waiting.pop(0)
            if job.index in done:
                continue
            running.add(job.index)
            _WORKERS.submit(functools.partial(work, job))

    start_more()
    while any(job.index not in done for job in jobs):
        try:
            kind, job, number, value, error = messages.get(timeout=loop.wait_time(jobs, done))
        except queue.Empty:
            for run in loop.expired(jobs, done):
                running.discard(run.index)
                yield ToolRunFinished(run)
            start_more()
            continue
        if job.index in done:
            continue  # it finished after its time ran out: its result came too late
        if kind == "started":
            job.started = number
            yield ToolRunStarted(job.step, job.index, job.call)
        else:
            run = loop.completed(job, value, error, number)
            done[job.index] = run
            running.discard(job.index)
            start_more()
            yield ToolRunFinished(run)


# The async driver --------------------------------------------------------------------------


async def _adrive(loop: _Loop) -> AsyncGenerator[AgentEvent, None]:
    loop.begin()
    jobs = loop.unanswered_calls()
    if jobs:
        async for event in _async_tools(loop, jobs):
            yield event
    while (request := loop.next_request()) is not None:
        yield StepStarted(loop.step, request)
        try:
            stream = loop.backend.astream(request)
        except Exception as e:
            raise loop.backend_failed(e) from e
        cut = False
        try:
            while True:
                left = loop.remaining()
                try:
                    async with asyncio.timeout(left) as scope:
                        event = await anext(stream)
                except StopAsyncIteration:
                    break
                except TimeoutError as e:
                    if scope.expired():
                        cut = True
                        break
                    raise loop.backend_failed(e) from e
                except Exception as e:
                    raise loop.backend_failed(e) from e
                yield event
            response = stream.partial() if cut else await stream.get_response()
        finally:
            await stream.aclose()
        if cut:
            loop.cut_by_deadline(response)
            yield StepFinished(loop.step, response)
            break
        jobs, rejected = loop.take_response(response)
        yield StepFinished(loop.step, response)
        if rejected is not None:
            yield rejected
        if jobs:
            async for event in _async_tools(loop, jobs):
                yield event
    yield RunFinished(loop.result())


async def _async_tools(loop: _Loop, jobs: list[_Job]) -> AsyncIterator[AgentEvent]:
    hook = loop.settings.before_tool_call
    for i, job in enumerate(jobs):
        if hook is None or job.outcome is not None:
            continue
        assert job.tool is not None
        decision = hook(job.call, job.tool)
        if inspect.isawaitable(decision):
            decision = await decision
        if not loop.decide(jobs, i, decision):
            break
    done: dict[int, ToolRun] = {}
    for job in jobs:
        if job.outcome is not None:
            done[job.index] = job.outcome
            yield ToolRunFinished(job.outcome)
    runnable = [job for job in jobs if job.outcome is None]
    if runnable:
        async for event in _async_execute(loop, runnable, done):
            yield event
    loop.record_runs(jobs, done)


async def _async_execute(
    loop: _Loop, jobs: list[_Job], done: dict[int, ToolRun]
) -> AsyncIterator[AgentEvent]:
    messages: asyncio.Queue[tuple[str, _Job, float, Any, BaseException | None]]
    messages = asyncio.Queue()
    event_loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(loop.settings.max_parallel)

    async def in_thread(job: _Job, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # A worker thread runs the sync tool (see _Workers); its outcome comes back through
        # a future of this event loop.
        future: asyncio.Future[Any] = event_loop.create_future()

        def settle(value: Any, error: BaseException | None) -> None:
            if future.done():
                return  # cancelled: the call's time ran out
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

        def target() -> None:
            started = time.monotonic()
            value: Any = None
            error: BaseException | None = None
            with contextlib.suppress(RuntimeError):  # the event loop may be closed by now
                event_loop.call_soon_threadsafe(
                    messages.put_nowait, ("started", job, started, None, None)
                )
            try:
                value = _function(job)(*args, **kwargs)
                if inspect.isawaitable(value):
                    value = asyncio.run(_awaited(value))
            except BaseException as e:  # a tool's SystemExit too must not end the run
                error = e
            with contextlib.suppress(RuntimeError):
                event_loop.call_soon_threadsafe(settle, value, error)

        _WORKERS.submit(target)
        return await future

    async def work(job: _Job) -> None:
        async with limit:
            started = time.monotonic()
            value: Any = None
            error: BaseException | None = None
            try:
                args, kwargs = loop.call_arguments(job)
                function = _function(job)
                if inspect.iscoroutinefunction(function):
                    messages.put_nowait(("started", job, started, None, None))
                    value = await function(*args, **kwargs)
                else:
                    value = await in_thread(job, args, kwargs)
            except asyncio.CancelledError:
                raise
            except BaseException as e:  # a tool's SystemExit too must not end the run
                error = e
            messages.put_nowait(("finished", job, time.monotonic() - started, value, error))

    tasks = {job.index: asyncio.create_task(work(job)) for job in jobs}
    getter: asyncio.Task[Any] | None = None
    try:
        while any(job.index not in done for job in jobs):
            if getter is None:
                getter = asyncio.create_task(messages.get())
            ready, _ = await asyncio.wait({getter}, timeout=loop.wait_time(jobs, done))
            if not ready:
                for run in loop.expired(jobs, done):
                    tasks[run.index].cancel()  # frees its slot; a thread runs on unseen
                    yield ToolRunFinished(run)
                continue
            kind, job, number, value, error = getter.result()
            getter = None
            if job.index in done:
                continue
            if kind == "started":
                job.started = number
                yield ToolRunStarted(job.step, job.index, job.call)
            else:
                run = loop.completed(job, value, error, number)
                done[job.index] = run
                yield ToolRunFinished(run)
    finally:
        if getter is not None:
            getter.cancel()
        for task in tasks.values():
            task.cancel()


# Streams and the public functions ----------------------------------------------------------


class AgentStream:
    """A run as it happens: iterate it for `AgentEvent`s; ``.result`` is the `AgentResult`.

    Use it as a context manager (or call `close`) to stop early; the result then has
    ``StopReason.CLOSED`` and keeps everything so far.
    """

    def __init__(self, loop: _Loop) -> None:
        self._loop = loop
        self._events = _drive(loop)
        self._result: AgentResult | None = None

    def __iter__(self) -> Iterator[AgentEvent]:
        return self

    def __next__(self) -> AgentEvent:
        if self._result is not None:
            raise StopIteration
        try:
            return next(self._events)
        except StopIteration as stop:
            self._result = stop.value
            raise

    @property
    def result(self) -> AgentResult:
        """The run's result (runs it to its end first if needed)."""
        if self._result is None:
            for _ in self:
                pass
        assert self._result is not None
        return self._result

    def close(self) -> None:
        """Stop the run; running tools are not waited for."""
        self._events.close()
        if self._result is None:
            self._result = self._loop.result()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncAgentStream:
    """The async twin of `AgentStream`: ``async for event in stream``; ``await
    stream.get_result()``."""

    def __init__(self, loop: _Loop) -> None:
        self._loop = loop
        self._events = _adrive(loop)
        self._result: AgentResult | None = None

    def __aiter__(self) -> AsyncIterator[AgentEvent]:
        return self

    async def __anext__(self) -> AgentEvent:
        if self._result is not None:
            raise StopAsyncIteration
        event = await anext(self._events)
        if isinstance(event, RunFinished):
            self._result = event.result
        return event

    async def get_result(self) -> AgentResult:
        """The run's result (runs it to its end first if needed)."""
        while self._result is None:
            await anext(self)
        return self._result

    @property
    def result(self) -> AgentResult:
        """The result once the stream has been read to its end."""
        if self._result is None:
            raise RuntimeError("read the stream to its end first, or await get_result()")
        return self._result

    async def aclose(self) -> None:
        """Stop the run; running tools are cancelled."""
        await self._events.aclose()
        if self._result is None:
            self._result = self._loop.result()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


Messages: TypeAlias = ChatRequest | Sequence[Message] | Message | str
"""What a run starts from: a request, a list of messages, a message, or a user's text."""


@dataclass(frozen=True, slots=True)
class RunLimits:
    """A run's limits and options as one value, shared by `run`, `arun`, `run_stream` and
    `arun_stream` (see `run` for what each field does). Every field may also be passed to
    those functions as a keyword argument of the same name."""

    max_steps: int = 10
    deadline: float | None = None
    token_budget: int | None = None
    max_tool_failures: int = 3
    tool_timeout: float | None = None
    response_format: Any = None
    output_retries: int = 2
    before_tool_call: ToolCallHook | None = None
    code_interpreter: bool | Sandbox | None = None
    brave_search: Callable[[str], Any] | None = None
    wolfram_alpha: Callable[[str], Any] | None = None
    max_parallel: int = 8
    reset_tool_choice: bool = True

    @classmethod
    def of(cls, limits: RunLimits | None, params: dict[str, Any]) -> RunLimits:
        """``limits`` with the fields named in ``params`` taken out of it and applied."""
        if limits is not None and not isinstance(limits, RunLimits):
            raise InputError(f"limits must be a RunLimits, got {type(limits).__name__}")
        given = {name: params.pop(name) for name in _LIMIT_FIELDS if name in params}
        base = limits if limits is not None else cls()
        return dataclasses.replace(base, **given) if given else base


_LIMIT_FIELDS = tuple(f.name for f in dataclasses.fields(RunLimits))


def _loop(
    backend: Backend,
    messages: Messages,
    tools: Sequence[Tool | Callable[..., Any]],
    limits: RunLimits | None,
    params: dict[str, Any],
    *,
    asynchronous: bool,
) -> _Loop:
    run_limits = RunLimits.of(limits, params)
    settings = _Settings(
        run_limits.max_steps,
        run_limits.deadline,
        run_limits.token_budget,
        run_limits.max_tool_failures,
        run_limits.tool_timeout,
        run_limits.output_retries,
        run_limits.before_tool_call,
        run_limits.max_parallel,
        run_limits.reset_tool_choice,
    )
    return _Loop(
        backend,
        messages,
        tools,
        run_limits.response_format,
        run_limits.code_interpreter,
        run_limits.brave_search,
        run_limits.wolfram_alpha,
        settings,
        params,
        asynchronous=asynchronous,
    )


def run_stream(
    backend: Backend,
    messages: Messages,
    *,
    tools: Sequence[Tool | Callable[..., Any]] = (),
    limits: RunLimits | None = None,
    **params: Any,
) -> AgentStream:
    """Start a run and stream its events; see `run` for the arguments."""
    return AgentStream(_loop(backend, messages, tools, limits, params, asynchronous=False))


def run(
    backend: Backend,
    messages: Messages,
    *,
    tools: Sequence[Tool | Callable[..., Any]] = (),
    limits: RunLimits | None = None,
    on_event: Callable[[AgentEvent], None] | None = None,
    **params: Any,
) -> AgentResult:
    """Run the conversation with tools until the model answers or a limit is reached.

    Args:
        backend: any chatlane backend.
        messages: the conversation (never changed), a user's text, or a `ChatRequest`.
        tools: `Tool`s (with functions) or typed functions the model may call.
        limits: the run's limits and options as one `RunLimits`; each of its fields may also
            be given as a keyword argument here, which wins over ``limits``:
        max_steps: the most model calls the run makes (output retries included).
        deadline: seconds the whole run may take. It is checked between a stream's events
            and while tools run; a sync backend blocked waiting for its first byte is
            bounded by its own timeouts (`arun` cancels it at the deadline).
        token_budget: the most tokens (prompt and completion, summed over the steps, as the
            backend reports them) the run may use; it also caps each call's ``max_tokens``.
        max_tool_failures: failed tool calls in a row that end the run.
        tool_timeout: seconds one tool call may take (its result is then a timeout error).
        response_format: a Pydantic model class or JSON schema the answer must match.
        output_retries: how often an answer that does not validate is sent back.
        before_tool_call: a hook that approves, changes or cancels each call, or stops the run.
        code_interpreter: True or a `Sandbox` to let the model run Python in a sandbox.
        brave_search: a function that answers ``brave_search`` calls (query text in).
        wolfram_alpha: a function that answers ``wolfram_alpha`` calls (query text in).
        max_parallel: the most calls of one turn that run at the same time.
        reset_tool_choice: send ``tool_choice`` only until the model has called a tool, so
            a forced call does not repeat forever.
        on_event: called with every `AgentEvent` as it happens.
        **params: request fields (``model``, ``temperature``, ``tool_choice``, ...).

    Raises:
        InputError: an argument is unusable.
        AgentError: the backend failed; ``.result`` holds everything so far.

    Exceptions raised by your own ``before_tool_call`` or ``on_event`` are not caught: they
    end the run as they are.
    """
    with run_stream(backend, messages, tools=tools, limits=limits, **params) as stream:
        for event in stream:
            if on_event is not None:
                on_event(event)
        return stream.result


def arun_stream(
    backend: Backend,
    messages: Messages,
    *,
    tools: Sequence[Tool | Callable[..., Any]] = (),
    limits: RunLimits | None = None,
    **params: Any,
) -> AsyncAgentStream:
    """The async twin of `run_stream` (``async for`` over it, or ``async with``)."""
    return AsyncAgentStream(_loop(backend, messages, tools, limits, params, asynchronous=True))


async def arun(
    backend: Backend,
    messages: Messages,
    *,
    tools: Sequence[Tool | Callable[..., Any]] = (),
    limits: RunLimits | None = None,
    on_event: Callable[[AgentEvent], Any] | None = None,
    **params: Any,
) -> AgentResult:
    """The async twin of `run`: tools run concurrently in the event loop (sync tools in
    threads), and the deadline also cancels a model call in flight. ``before_tool_call`` and
    ``on_event`` may be async functions."""
    async with arun_stream(backend, messages, tools=tools, limits=limits, **params) as stream:
        async for event in stream:
            if on_event is not None:
                outcome = on_event(event)
                if inspect.isawaitable(outcome):
                    await outcome
        return await stream.get_result()
