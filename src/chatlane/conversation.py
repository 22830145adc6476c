"""`Conversation`: a conversation that remembers its turns and logs every model call.

    conversation = Conversation(backend, store=Store.open(), tools=[get_weather])
    print(conversation.ask("Weather in Oslo?").text)
    for event in conversation.ask_stream("And in Rome?"):
        ...                                      # text deltas, tool runs, as they happen

Each question is one model call, or, with tools, an agent run (`chatlane.agent`) that runs
the model's calls until it answers. Every model call and tool run goes to the `Store` as it
happens, a failed or interrupted one too, with what had arrived. A question that fails is
taken back (the user may ask again); one that was interrupted keeps its partial answer, which
is part of the conversation now. `resume` takes up a logged conversation where it stopped.

`aask`/`aask_stream` are the async twins. The CLI's ``chat`` and ``run`` only drive this class.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Self

from chatlane.errors import ChatlaneError

if TYPE_CHECKING:
    from chatlane.agent import AgentResult
    from chatlane.backends.base import Backend
    from chatlane.messages import Message
    from chatlane.request import ChatRequest
    from chatlane.response import ChatResponse
    from chatlane.store import LoggedConversation, Store
    from chatlane.tools import Tool

__all__ = ["SESSION_HEADERS", "AsyncConversationStream", "Conversation", "ConversationStream"]

SESSION_HEADERS: dict[str, str] = {
    # vLLM's production-stack router routes by a session key header (--routing-logic session
    # --session-key NAME); its documentation uses x-user-id.
    "vllm-router": "x-user-id",
    # A plain name for load balancers configured by hand (consistent hashing on a header).
    "session": "x-session-id",
}
"""Header presets for `Conversation`'s ``session_header``: a stable id per conversation lets
a cluster router send every turn to the replica whose prefix cache holds the conversation."""

Event = Any  # ChatEvent | AgentEvent (the agent's events, with each step's chat events)


class _Recorder:
    """Logs the model calls and tool runs of one question as its events go by."""

    def __init__(self, conversation: Conversation) -> None:
        self.conversation = conversation
        self.step = 0
        self.requests: dict[int, ChatRequest] = {}
        self.started: dict[int, float] = {}
        self.first: dict[int, float] = {}
        self.calls: dict[int, int | None] = {}

    def begin(self, step: int, request: ChatRequest) -> None:
        self.step = step
        self.requests[step] = request
        self.started[step] = time.monotonic()

    def event(self, event: Event) -> None:
        from chatlane.agent import StepFinished, StepStarted, ToolRunFinished
        from chatlane.events import ReasoningDelta, TextDelta, ToolCallStarted

        if isinstance(event, StepStarted):
            self.begin(event.step, event.request)
        elif isinstance(event, TextDelta | ReasoningDelta | ToolCallStarted):
            self.first.setdefault(self.step, time.monotonic() - self.started.get(self.step, 0.0))
        elif isinstance(event, StepFinished):
            self.calls[event.step] = self.log(event.step, event.response, None)
        elif isinstance(event, ToolRunFinished):
            run = event.run
            store = self.conversation.store
            call_id = self.calls.get(run.step)
            if store is not None and call_id is not None:
                store.log_tool_run(
                    call_id,
                    tool_call_id=run.call.id,
                    name=run.call.name,
                    arguments=run.call.raw_arguments,
                    result=run.content if run.ok else None,
                    error=None if run.ok else f"{run.status}: {run.content}",
                    duration=run.duration,
                )

    def log(
        self, step: int, response: ChatResponse | None, error: BaseException | None
    ) -> int | None:
        """Log the model call of ``step`` (once), with what it answered or how it failed."""
        conversation = self.conversation
        if conversation.store is None or step in self.calls or step not in self.requests:
            return self.calls.get(step)
        conversation.id, call_id = conversation.store.log_call(
            conversation.id,
            self.requests[step],
            response,
            error=error,
            backend=conversation.label,
            duration=time.monotonic() - self.started[step],
            first_token=self.first.get(step),
        )
        self.calls[step] = call_id
        return call_id

    def failed(self, error: BaseException, partial: ChatResponse | None = None) -> None:
        """The current step's call failed with ``error`` (an `AgentError` is logged as the
        error that stopped the run, with what had arrived)."""
        from chatlane.agent import AgentError

        if isinstance(error, AgentError) and isinstance(error.__cause__, BaseException):
            error = error.__cause__
        self.log(self.step, partial or getattr(error, "partial", None), error)


class Conversation:
    """A conversation with a backend (see the module docstring).

    Args:
        backend: the model to talk to.
        store: where every call is logged (None: nowhere).
        tools: tools the model may call; with tools each question is an agent run.
        system: the system prompt.
        label: how the log names the backend (default: its class name; never a secret).
        session_header: send a stable id for this conversation in this header with every
            call (a name from `SESSION_HEADERS`, such as ``"vllm-router"``, or any header
            name), so that a cluster router keeps the conversation on one replica and its
            prefix cache stays warm. The backend must support ``with_options(headers=...)``
            (`OpenAIChat`, `CompletionChat`).
        **params: request settings for every call (``max_tokens``, ``temperature``, ...);
            None values are left out.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        store: Store | None = None,
        tools: Sequence[Tool] = (),
        system: str | None = None,
        label: str | None = None,
        session_header: str | None = None,
        **params: Any,
    ) -> None:
        self.backend = backend
        self._calls: Backend = backend
        """The backend the calls go to: ``backend``, or a copy sending the session header."""
        self.session_id: str | None = None
        """The id sent in ``session_header`` (None when no header is set)."""
        self._session_header = SESSION_HEADERS.get(session_header or "", session_header)
        self.store = store
        self.tools = tuple(tools)
        self.label = label or type(backend).__name__
        self.params = {k: v for k, v in params.items() if v is not None}
        self.messages: list[Message] = []
        self.id: str | None = None
        """The conversation's id in the log, once its first call is logged."""
        self.last_run: AgentResult | None = None
        """The agent run of the last question, when tools were given."""
        if system is not None:
            self.set_system(system)
        if self._session_header:
            import uuid

            self._use_session(uuid.uuid4().hex)

    def _use_session(self, session_id: str) -> None:
        from chatlane.errors import InputError

        assert self._session_header is not None
        with_options = getattr(self.backend, "with_options", None)
        if with_options is None:
            raise InputError(
                f"session_header needs a backend that can add headers; "
                f"{type(self.backend).__name__} cannot"
            )
        self._calls = with_options(headers={self._session_header: session_id})
        self.session_id = session_id

    @classmethod
    def resume(
        cls, backend: Backend, store: Store, id_or_prefix: str, **kwargs: Any
    ) -> tuple[Self, LoggedConversation]:
        """A logged conversation taken up where it stopped (an id, a unique prefix or
        ``last``), and what the log holds of it.

        Raises:
            StoreError: no such conversation.
        """
        conversation = cls(backend, store=store, **kwargs)
        logged = store.conversation(id_or_prefix)
        conversation.id = logged.summary.id
        conversation.messages = logged.messages()
        if conversation.session_id is not None:
            # The same conversation keeps its session: its id in the log.
            conversation._use_session(logged.summary.id)
        return conversation, logged

    @property
    def system(self) -> str | None:
        """The system prompt, if the conversation has one."""
        if self.messages and self.messages[0].role.value == "system":
            return self.messages[0].text
        return None

    def set_system(self, text: str) -> None:
        """Set or replace the system prompt."""
        from chatlane.messages import system

        if self.system is not None:
            self.messages[0] = system(text)
        else:
            self.messages.insert(0, system(text))

    # -- asking --------------------------------------------------------------------------

    def ask(self, text: str) -> ChatResponse:
        """Ask ``text`` and return the answer (see the module docstring)."""
        stream = self.ask_stream(text)
        for _ in stream:
            pass
        return stream.response

    def ask_stream(self, text: str) -> ConversationStream:
        """Ask ``text``; iterate the events as they come, then read ``.response``."""
        return ConversationStream(self._events(text))

    async def aask(self, text: str) -> ChatResponse:
        """The async twin of `ask`."""
        stream = self.aask_stream(text)
        async for _ in stream:
            pass
        return stream.response

    def aask_stream(self, text: str) -> AsyncConversationStream:
        """The async twin of `ask_stream` (``async for``)."""
        box: list[ChatResponse] = []
        return AsyncConversationStream(self._aevents(text, box), box)

    def _start(self, text: str) -> tuple[int, ChatRequest]:
        from chatlane.messages import user

        before = len(self.messages)
        self.messages.append(user(text))
        try:
            fields = {k: v for k, v in self.params.items() if k != "code_interpreter"}
            request = self._calls.request(self.messages, tools=self.tools or None, **fields)
        except Exception:
            del self.messages[before:]
            raise
        return before, request

    @property
    def _agent_run(self) -> bool:
        """Each question is an agent run: there are tools, or the code interpreter."""
        return bool(self.tools or self.params.get("code_interpreter"))

    def _agent_kwargs(self) -> dict[str, Any]:
        return {"tools": self.tools, **self.params}

    def _finish_run(self, result: AgentResult) -> ChatResponse:
        self.messages = list(result.messages)
        self.last_run = result
        if result.response is None:
            raise ChatlaneError(f"the agent run ended without a model call: {result.detail}")
        return result.response

    def _events(self, text: str) -> Generator[Event, None, ChatResponse]:
        from chatlane.agent import AgentError, run_stream
        from chatlane.errors import StreamInterrupted

        before, request = self._start(text)
        recorder = _Recorder(self)
        try:
            if self._agent_run:
                run = run_stream(self._calls, list(request.messages), **self._agent_kwargs())
                try:
                    for event in run:
                        recorder.event(event)
                        yield event
                except AgentError as e:
                    recorder.failed(e)
                    raise
                except (KeyboardInterrupt, GeneratorExit):
                    run.close()
                    recorder.log(recorder.step, None, KeyboardInterrupt("stopped by the user"))
                    self.messages = list(run.result.messages)
                    raise
                return self._finish_run(run.result)
            recorder.begin(1, request)
            stream = self._calls.stream(request)
            try:
                for event in stream:
                    recorder.event(event)
                    yield event
            except StreamInterrupted as e:
                recorder.failed(e, e.partial)
                self.messages.append(e.partial.message)
                raise
            except (KeyboardInterrupt, GeneratorExit):
                stream.close()
                partial = stream.partial()
                recorder.log(1, partial, KeyboardInterrupt("stopped by the user"))
                self.messages.append(partial.message)
                raise
            except Exception as e:
                recorder.failed(e)
                raise
            response = stream.response
            recorder.log(1, response, None)
            self.messages.append(response.message)
            return response
        except (StreamInterrupted, KeyboardInterrupt, GeneratorExit):
            raise  # the partial answer is part of the conversation now
        except Exception:
            del self.messages[before:]  # unanswered: the user may ask again (it is logged)
            raise

    async def _aevents(self, text: str, box: list[ChatResponse]) -> AsyncIterator[Event]:
        """`_events` for async code; the answer goes into ``box``."""
        import asyncio

        from chatlane.agent import AgentError, arun_stream
        from chatlane.errors import StreamInterrupted

        before, request = self._start(text)
        recorder = _Recorder(self)
        try:
            if self._agent_run:
                run = arun_stream(self._calls, list(request.messages), **self._agent_kwargs())
                try:
                    async for event in run:
                        recorder.event(event)
                        yield event
                except AgentError as e:
                    recorder.failed(e)
                    raise
                except (asyncio.CancelledError, GeneratorExit):
                    await run.aclose()
                    recorder.log(recorder.step, None, asyncio.CancelledError("cancelled"))
                    self.messages = list(run.result.messages)
                    raise
                box.append(self._finish_run(run.result))
                return
            recorder.begin(1, request)
            stream = self._calls.astream(request)
            try:
                async for event in stream:
                    recorder.event(event)
                    yield event
            except StreamInterrupted as e:
                recorder.failed(e, e.partial)
                self.messages.append(e.partial.message)
                raise
            except (asyncio.CancelledError, GeneratorExit):
                await stream.aclose()
                partial = stream.partial()
                recorder.log(1, partial, asyncio.CancelledError("cancelled"))
                self.messages.append(partial.message)
                raise
            except Exception as e:
                recorder.failed(e)
                raise
            response = await stream.get_response()
            recorder.log(1, response, None)
            self.messages.append(response.message)
            box.append(response)
        except (StreamInterrupted, asyncio.CancelledError, GeneratorExit):
            raise
        except Exception:
            del self.messages[before:]
            raise


class ConversationStream:
    """The events of one question as they come; ``.response`` once read to the end."""

    def __init__(self, events: Generator[Event, None, ChatResponse]) -> None:
        self._events = events
        self._response: ChatResponse | None = None

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        try:
            return next(self._events)
        except StopIteration as done:
            self._response = done.value
            raise

    @property
    def response(self) -> ChatResponse:
        """The answer (read the stream to its end first)."""
        if self._response is None:
            raise RuntimeError("read the stream to its end first")
        return self._response

    def close(self) -> None:
        """Stop early: the partial answer is kept and logged as stopped."""
        self._events.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncConversationStream:
    """The async twin of `ConversationStream`."""

    def __init__(self, events: AsyncIterator[Event], box: list[ChatResponse]) -> None:
        self._events = events
        self._box = box

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self._events.__anext__()

    @property
    def response(self) -> ChatResponse:
        """The answer (read the stream to its end first)."""
        if not self._box:
            raise RuntimeError("read the stream to its end first")
        return self._box[0]

    async def aclose(self) -> None:
        close = getattr(self._events, "aclose", None)
        if close is not None:
            await close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
