"""chatlane: one typed chat layer for Llama-family and OpenAI-compatible models.

Everything public is importable from here; modules load on first use, so
``import chatlane`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from chatlane._version import __version__

if TYPE_CHECKING:
    # `X as X` marks each name as re-exported for type checkers (mypy --strict).
    from chatlane._sandbox import (
        Sandbox as Sandbox,
    )
    from chatlane._sandbox import (
        SandboxResult as SandboxResult,
    )
    from chatlane.agent import (
        AgentError as AgentError,
    )
    from chatlane.agent import (
        AgentEvent as AgentEvent,
    )
    from chatlane.agent import (
        AgentResult as AgentResult,
    )
    from chatlane.agent import (
        AgentStream as AgentStream,
    )
    from chatlane.agent import (
        ApproveCall as ApproveCall,
    )
    from chatlane.agent import (
        AsyncAgentStream as AsyncAgentStream,
    )
    from chatlane.agent import (
        CancelCall as CancelCall,
    )
    from chatlane.agent import (
        ChangeCall as ChangeCall,
    )
    from chatlane.agent import (
        OutputRejected as OutputRejected,
    )
    from chatlane.agent import (
        RunFinished as RunFinished,
    )
    from chatlane.agent import (
        RunLimits as RunLimits,
    )
    from chatlane.agent import (
        StepFinished as StepFinished,
    )
    from chatlane.agent import (
        StepStarted as StepStarted,
    )
    from chatlane.agent import (
        StopReason as StopReason,
    )
    from chatlane.agent import (
        StopRun as StopRun,
    )
    from chatlane.agent import (
        ToolCallDecision as ToolCallDecision,
    )
    from chatlane.agent import (
        ToolCallHook as ToolCallHook,
    )
    from chatlane.agent import (
        ToolRun as ToolRun,
    )
    from chatlane.agent import (
        ToolRunFinished as ToolRunFinished,
    )
    from chatlane.agent import (
        ToolRunStarted as ToolRunStarted,
    )
    from chatlane.agent import (
        arun as arun,
    )
    from chatlane.agent import (
        arun_stream as arun_stream,
    )
    from chatlane.agent import (
        run as run,
    )
    from chatlane.agent import (
        run_stream as run_stream,
    )
    from chatlane.backends.base import (
        AsyncChatStream as AsyncChatStream,
    )
    from chatlane.backends.base import (
        Backend as Backend,
    )
    from chatlane.backends.base import (
        ChatStream as ChatStream,
    )
    from chatlane.backends.completion import (
        CompletionChat as CompletionChat,
    )
    from chatlane.backends.fake import (
        Fake as Fake,
    )
    from chatlane.backends.llamacpp import (
        LlamaCpp as LlamaCpp,
    )
    from chatlane.backends.openai_chat import (
        OpenAIChat as OpenAIChat,
    )
    from chatlane.backends.transport import (
        RetryPolicy as RetryPolicy,
    )
    from chatlane.backends.transport import (
        Timeouts as Timeouts,
    )
    from chatlane.batch import (
        arun_batch as arun_batch,
    )
    from chatlane.batch import (
        read_batch_input as read_batch_input,
    )
    from chatlane.batch import (
        run_batch as run_batch,
    )
    from chatlane.conversation import (
        AsyncConversationStream as AsyncConversationStream,
    )
    from chatlane.conversation import (
        Conversation as Conversation,
    )
    from chatlane.conversation import (
        ConversationStream as ConversationStream,
    )
    from chatlane.errors import (
        APIStatusError as APIStatusError,
    )
    from chatlane.errors import (
        AuthenticationError as AuthenticationError,
    )
    from chatlane.errors import (
        BadRequest as BadRequest,
    )
    from chatlane.errors import (
        ChatlaneError as ChatlaneError,
    )
    from chatlane.errors import (
        ConnectError as ConnectError,
    )
    from chatlane.errors import (
        EngineError as EngineError,
    )
    from chatlane.errors import (
        GatewayTimeout as GatewayTimeout,
    )
    from chatlane.errors import (
        ImageError as ImageError,
    )
    from chatlane.errors import (
        InputError as InputError,
    )
    from chatlane.errors import (
        MessageError as MessageError,
    )
    from chatlane.errors import (
        NotFound as NotFound,
    )
    from chatlane.errors import (
        Overloaded as Overloaded,
    )
    from chatlane.errors import (
        ParseError as ParseError,
    )
    from chatlane.errors import (
        PaymentRequired as PaymentRequired,
    )
    from chatlane.errors import (
        RateLimited as RateLimited,
    )
    from chatlane.errors import (
        RequestTimeout as RequestTimeout,
    )
    from chatlane.errors import (
        SandboxUnavailable as SandboxUnavailable,
    )
    from chatlane.errors import (
        SchemaError as SchemaError,
    )
    from chatlane.errors import (
        ServerError as ServerError,
    )
    from chatlane.errors import (
        StreamInterrupted as StreamInterrupted,
    )
    from chatlane.errors import (
        StructuredOutputError as StructuredOutputError,
    )
    from chatlane.errors import (
        TimeoutException as TimeoutException,
    )
    from chatlane.errors import (
        ToolError as ToolError,
    )
    from chatlane.errors import (
        TransportError as TransportError,
    )
    from chatlane.errors import (
        UnexpectedResponse as UnexpectedResponse,
    )
    from chatlane.events import (
        Accumulator as Accumulator,
    )
    from chatlane.events import (
        ChatEvent as ChatEvent,
    )
    from chatlane.events import (
        Finished as Finished,
    )
    from chatlane.events import (
        ReasoningDelta as ReasoningDelta,
    )
    from chatlane.events import (
        ResponseStarted as ResponseStarted,
    )
    from chatlane.events import (
        StreamResumed as StreamResumed,
    )
    from chatlane.events import (
        TextDelta as TextDelta,
    )
    from chatlane.events import (
        ToolCallDelta as ToolCallDelta,
    )
    from chatlane.events import (
        ToolCallDone as ToolCallDone,
    )
    from chatlane.events import (
        ToolCallStarted as ToolCallStarted,
    )
    from chatlane.events import (
        UsageReported as UsageReported,
    )
    from chatlane.events import (
        aaccumulate as aaccumulate,
    )
    from chatlane.events import (
        accumulate as accumulate,
    )
    from chatlane.formats.llama3 import (
        Llama3 as Llama3,
    )
    from chatlane.messages import (
        Image as Image,
    )
    from chatlane.messages import (
        Message as Message,
    )
    from chatlane.messages import (
        Role as Role,
    )
    from chatlane.messages import (
        Text as Text,
    )
    from chatlane.messages import (
        ToolCall as ToolCall,
    )
    from chatlane.messages import (
        assistant as assistant,
    )
    from chatlane.messages import (
        system as system,
    )
    from chatlane.messages import (
        tool_result as tool_result,
    )
    from chatlane.messages import (
        user as user,
    )
    from chatlane.request import (
        ChatRequest as ChatRequest,
    )
    from chatlane.request import (
        ResponseFormat as ResponseFormat,
    )
    from chatlane.request import (
        StreamOptions as StreamOptions,
    )
    from chatlane.response import (
        ChatResponse as ChatResponse,
    )
    from chatlane.response import (
        Choice as Choice,
    )
    from chatlane.response import (
        FinishReason as FinishReason,
    )
    from chatlane.response import (
        Usage as Usage,
    )
    from chatlane.store import (
        Store as Store,
    )
    from chatlane.store import (
        StoreError as StoreError,
    )
    from chatlane.tools import (
        Tool as Tool,
    )
    from chatlane.tools import (
        brave_search as brave_search,
    )
    from chatlane.tools import (
        code_interpreter as code_interpreter,
    )
    from chatlane.tools import (
        strict_schema as strict_schema,
    )
    from chatlane.tools import (
        tool as tool,
    )
    from chatlane.tools import (
        wolfram_alpha as wolfram_alpha,
    )

# name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "APIStatusError": "chatlane.errors",
    "Accumulator": "chatlane.events",
    "AgentError": "chatlane.agent",
    "AgentEvent": "chatlane.agent",
    "AgentResult": "chatlane.agent",
    "AgentStream": "chatlane.agent",
    "ApproveCall": "chatlane.agent",
    "AsyncAgentStream": "chatlane.agent",
    "AsyncChatStream": "chatlane.backends.base",
    "AsyncConversationStream": "chatlane.conversation",
    "AuthenticationError": "chatlane.errors",
    "Backend": "chatlane.backends.base",
    "BadRequest": "chatlane.errors",
    "CancelCall": "chatlane.agent",
    "ChangeCall": "chatlane.agent",
    "ChatEvent": "chatlane.events",
    "ChatRequest": "chatlane.request",
    "ChatResponse": "chatlane.response",
    "ChatStream": "chatlane.backends.base",
    "ChatlaneError": "chatlane.errors",
    "Choice": "chatlane.response",
    "CompletionChat": "chatlane.backends.completion",
    "Conversation": "chatlane.conversation",
    "ConversationStream": "chatlane.conversation",
    "ConnectError": "chatlane.errors",
    "EngineError": "chatlane.errors",
    "Fake": "chatlane.backends.fake",
    "FinishReason": "chatlane.response",
    "Finished": "chatlane.events",
    "Image": "chatlane.messages",
    "ImageError": "chatlane.errors",
    "InputError": "chatlane.errors",
    "Llama3": "chatlane.formats.llama3",
    "LlamaCpp": "chatlane.backends.llamacpp",
    "Message": "chatlane.messages",
    "MessageError": "chatlane.errors",
    "NotFound": "chatlane.errors",
    "OpenAIChat": "chatlane.backends.openai_chat",
    "OutputRejected": "chatlane.agent",
    "ParseError": "chatlane.errors",
    "RateLimited": "chatlane.errors",
    "ReasoningDelta": "chatlane.events",
    "ResponseFormat": "chatlane.request",
    "ResponseStarted": "chatlane.events",
    "RetryPolicy": "chatlane.backends.transport",
    "Role": "chatlane.messages",
    "RunFinished": "chatlane.agent",
    "RunLimits": "chatlane.agent",
    "Sandbox": "chatlane._sandbox",
    "SandboxResult": "chatlane._sandbox",
    "SandboxUnavailable": "chatlane.errors",
    "SchemaError": "chatlane.errors",
    "ServerError": "chatlane.errors",
    "StepFinished": "chatlane.agent",
    "StepStarted": "chatlane.agent",
    "StopReason": "chatlane.agent",
    "StopRun": "chatlane.agent",
    "Store": "chatlane.store",
    "StoreError": "chatlane.store",
    "StreamInterrupted": "chatlane.errors",
    "StreamOptions": "chatlane.request",
    "StructuredOutputError": "chatlane.errors",
    "Text": "chatlane.messages",
    "StreamResumed": "chatlane.events",
    "TextDelta": "chatlane.events",
    "TimeoutException": "chatlane.errors",
    "Timeouts": "chatlane.backends.transport",
    "Tool": "chatlane.tools",
    "ToolCall": "chatlane.messages",
    "ToolCallDecision": "chatlane.agent",
    "ToolCallDelta": "chatlane.events",
    "ToolCallDone": "chatlane.events",
    "ToolCallHook": "chatlane.agent",
    "ToolCallStarted": "chatlane.events",
    "GatewayTimeout": "chatlane.errors",
    "Overloaded": "chatlane.errors",
    "PaymentRequired": "chatlane.errors",
    "RequestTimeout": "chatlane.errors",
    "UnexpectedResponse": "chatlane.errors",
    "ToolError": "chatlane.errors",
    "ToolRun": "chatlane.agent",
    "ToolRunFinished": "chatlane.agent",
    "ToolRunStarted": "chatlane.agent",
    "TransportError": "chatlane.errors",
    "Usage": "chatlane.response",
    "UsageReported": "chatlane.events",
    "aaccumulate": "chatlane.events",
    "accumulate": "chatlane.events",
    "arun": "chatlane.agent",
    "arun_batch": "chatlane.batch",
    "arun_stream": "chatlane.agent",
    "assistant": "chatlane.messages",
    "brave_search": "chatlane.tools",
    "code_interpreter": "chatlane.tools",
    "read_batch_input": "chatlane.batch",
    "run": "chatlane.agent",
    "run_batch": "chatlane.batch",
    "run_stream": "chatlane.agent",
    "strict_schema": "chatlane.tools",
    "system": "chatlane.messages",
    "tool": "chatlane.tools",
    "tool_result": "chatlane.messages",
    "user": "chatlane.messages",
    "wolfram_alpha": "chatlane.tools",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    if name == "TimeoutError":  # the old name of TimeoutException; warns (see chatlane.errors)
        from chatlane import errors

        return errors.__getattr__(name)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'chatlane' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
