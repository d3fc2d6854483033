"""chatstream: session-centric streaming chat for Hugging Face models over FastAPI.

Everything a user needs is importable from here. Names are loaded on first use, so
``import chatstream`` stays light: torch and transformers load only with an engine or a model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .admission.base import Admission, Load, Permit
    from .admission.semaphore import RedisSemaphore
    from .chat.outcome import CompletionCallback, Outcome
    from .chat.params import GenerationSettings
    from .chat_stream import ChatStream
    from .config import AdmissionConfig, RequestLimits
    from .conversations.prompt import ChatPrompt, Message
    from .engines.base import (
        Engine,
        FinishReason,
        GenerationDone,
        GenerationEvent,
        GenerationParams,
        GenerationRequest,
        PromptRenderer,
        TextDelta,
    )
    from .engines.batched import BatchedEngine
    from .engines.hf import TransformersEngine
    from .engines.mock import MockEngine
    from .engines.remote import OpenAICompatibleEngine
    from .engines.rendering import ChatTemplateRenderer, MissingChatTemplateError, PlainRenderer
    from .errors import (
        ChatStreamError,
        GenerationFailed,
        InputTooLong,
        InvalidJSON,
        InvalidRequest,
        NotFound,
        NothingToRegenerate,
        QueueFull,
        QueueTimeout,
        ServiceUnavailable,
        SessionBusy,
        Unauthorized,
        UpstreamUnavailable,
    )
    from .model import ModelNotFoundError, load_model
    from .settings import ConfigError, Settings

_MODULES = {
    ".admission.base": ("Admission", "Load", "Permit"),
    ".admission.semaphore": ("RedisSemaphore",),
    ".chat.outcome": ("CompletionCallback", "Outcome"),
    ".chat.params": ("GenerationSettings",),
    ".chat_stream": ("ChatStream",),
    ".config": ("AdmissionConfig", "RequestLimits"),
    ".conversations.prompt": ("ChatPrompt", "Message"),
    ".engines.base": (
        "Engine",
        "FinishReason",
        "GenerationDone",
        "GenerationEvent",
        "GenerationParams",
        "GenerationRequest",
        "PromptRenderer",
        "TextDelta",
    ),
    ".engines.batched": ("BatchedEngine",),
    ".engines.hf": ("TransformersEngine",),
    ".engines.mock": ("MockEngine",),
    ".engines.remote": ("OpenAICompatibleEngine",),
    ".errors": (
        "ChatStreamError",
        "GenerationFailed",
        "InputTooLong",
        "InvalidJSON",
        "InvalidRequest",
        "NotFound",
        "NothingToRegenerate",
        "QueueFull",
        "QueueTimeout",
        "ServiceUnavailable",
        "SessionBusy",
        "Unauthorized",
        "UpstreamUnavailable",
    ),
    ".model": ("ModelNotFoundError", "load_model"),
    ".engines.rendering": ("ChatTemplateRenderer", "MissingChatTemplateError", "PlainRenderer"),
    ".settings": ("ConfigError", "Settings"),
}
_MODULE_OF = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "Admission",
    "AdmissionConfig",
    "BatchedEngine",
    "ChatPrompt",
    "ChatStream",
    "ChatStreamError",
    "ChatTemplateRenderer",
    "CompletionCallback",
    "ConfigError",
    "Engine",
    "FinishReason",
    "GenerationDone",
    "GenerationEvent",
    "GenerationFailed",
    "GenerationParams",
    "GenerationRequest",
    "GenerationSettings",
    "InputTooLong",
    "InvalidJSON",
    "InvalidRequest",
    "Load",
    "Message",
    "MissingChatTemplateError",
    "MockEngine",
    "ModelNotFoundError",
    "NotFound",
    "NothingToRegenerate",
    "OpenAICompatibleEngine",
    "Outcome",
    "Permit",
    "PlainRenderer",
    "PromptRenderer",
    "QueueFull",
    "QueueTimeout",
    "RedisSemaphore",
    "RequestLimits",
    "ServiceUnavailable",
    "SessionBusy",
    "Settings",
    "TextDelta",
    "TransformersEngine",
    "Unauthorized",
    "UpstreamUnavailable",
    "load_model",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'chatstream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
