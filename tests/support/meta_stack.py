"""llama-stack's prompt adapter for the conformance oracles, imported without its logging setup.

Importing ``llama_stack`` configures the process's logging (llama_stack/log.py: a rich handler
on the root logger, and every existing logger set to WARNING), which would silence the logs
other tests read. This module imports what the oracles use and puts the logging back.
"""

from __future__ import annotations

import logging

_root = logging.getLogger()
_handlers, _level = _root.handlers[:], _root.level
_levels = {
    name: logger.level
    for name, logger in logging.root.manager.loggerDict.items()
    if isinstance(logger, logging.Logger)
}
try:
    from llama_stack.apis.common.content_types import ImageContentItem, TextContentItem
    from llama_stack.apis.inference import (
        ChatCompletionRequest,
        CompletionMessage,
        SystemMessage,
        ToolConfig,
        ToolDefinition,
        ToolResponseMessage,
        UserMessage,
    )
    from llama_stack.models.llama.datatypes import (
        BuiltinTool,
        StopReason,
        ToolCall,
        ToolParamDefinition,
    )
    from llama_stack.models.llama.llama3.prompt_templates import (
        PythonListCustomToolGenerator,
        system_prompts,
    )
    from llama_stack.providers.utils.inference.prompt_adapter import (
        augment_messages_for_tools_llama,
        augment_messages_for_tools_llama_3_1,
        chat_completion_request_to_messages,
    )
finally:
    _root.handlers[:] = _handlers
    _root.setLevel(_level)
    for _name, _logger in logging.root.manager.loggerDict.items():
        if isinstance(_logger, logging.Logger) and _name in _levels:
            _logger.setLevel(_levels[_name])

__all__ = [
    "BuiltinTool",
    "ChatCompletionRequest",
    "CompletionMessage",
    "ImageContentItem",
    "PythonListCustomToolGenerator",
    "StopReason",
    "SystemMessage",
    "TextContentItem",
    "ToolCall",
    "ToolConfig",
    "ToolDefinition",
    "ToolParamDefinition",
    "ToolResponseMessage",
    "UserMessage",
    "augment_messages_for_tools_llama",
    "augment_messages_for_tools_llama_3_1",
    "chat_completion_request_to_messages",
    "system_prompts",
]
