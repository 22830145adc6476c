"""chatlane: one typed chat layer for Llama-family and OpenAI-compatible models.

Everything public is importable from here; modules load on first use, so
``import chatlane`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from chatlane._version import __version__

if TYPE_CHECKING:
    from chatlane.agent import (
        AgentError,
        AgentEvent,
        AgentResult,
        AgentStream,
        ApproveCall,
        AsyncAgentStream,
        CancelCall,
        ChangeCall,
        OutputRejected,
        RunFinished,
        Sandbox,
        SandboxResult,
        StepFinished,
        StepStarted,
        StopReason,
        StopRun,
        ToolCallDecision,
        ToolCallHook,
        ToolRun,
        ToolRunFinished,
        ToolRunStarted,
        arun,
        arun_stream,
        run,
        run_stream,
    )
    from chatlane.backends.base import AsyncChatStream, Backend, ChatStream
    from chatlane.backends.completion import CompletionChat
    from chatlane.backends.fake import Fake
    from chatlane.backends.llamacpp import LlamaCpp
    from chatlane.backends.openai_chat import OpenAIChat
    from chatlane.backends.transport import RetryPolicy, Timeouts
    from chatlane.batch import arun_batch, read_batch_input, run_batch
    from chatlane.errors import (
        APIStatusError,
        AuthenticationError,
        BadRequest,
        ChatlaneError,
        ConnectError,
        EngineError,
        ImageError,
        InputError,
        MessageError,
        NotFound,
        ParseError,
        RateLimited,
        SchemaError,
        ServerError,
        StreamInterrupted,
        StructuredOutputError,
        TimeoutError,
        ToolError,
        TransportError,
    )
    from chatlane.events import (
        Accumulator,
        ChatEvent,
        Finished,
        ReasoningDelta,
        ResponseStarted,
        TextDelta,
        ToolCallDelta,
        ToolCallDone,
        ToolCallStarted,
        UsageReported,
        aaccumulate,
        accumulate,
    )
    from chatlane.formats.llama3 import Llama3
    from chatlane.messages import (
        Image,
        Message,
        Role,
        Text,
        ToolCall,
        assistant,
        system,
        tool_result,
        user,
    )
    from chatlane.request import ChatRequest, ResponseFormat, StreamOptions
    from chatlane.response import ChatResponse, Choice, FinishReason, Usage
    from chatlane.store import Store, StoreError
    from chatlane.tools import (
        Tool,
        brave_search,
        code_interpreter,
        strict_schema,
        tool,
        wolfram_alpha,
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
    "Sandbox": "chatlane._sandbox",
    "SandboxResult": "chatlane._sandbox",
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
    "TextDelta": "chatlane.events",
    "TimeoutError": "chatlane.errors",
    "Timeouts": "chatlane.backends.transport",
    "Tool": "chatlane.tools",
    "ToolCall": "chatlane.messages",
    "ToolCallDecision": "chatlane.agent",
    "ToolCallDelta": "chatlane.events",
    "ToolCallDone": "chatlane.events",
    "ToolCallHook": "chatlane.agent",
    "ToolCallStarted": "chatlane.events",
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
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'chatlane' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
