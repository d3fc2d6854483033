"""chatstream: session-centric streaming chat for Hugging Face models over FastAPI."""

from __future__ import annotations

from .admission.base import Admission, Load, Permit
from .chat_stream import ChatStream
from .config import Settings
from .engines.base import (
    Engine,
    GenerationDone,
    GenerationParams,
    GenerationRequest,
    PromptRenderer,
    TextDelta,
)
from .errors import ChatStreamError
from .outcome import CompletionCallback, Outcome
from .prompt import ChatPrompt, Message

__all__ = [
    "Admission",
    "ChatPrompt",
    "ChatStream",
    "ChatStreamError",
    "CompletionCallback",
    "Engine",
    "GenerationDone",
    "GenerationParams",
    "GenerationRequest",
    "Load",
    "Message",
    "Outcome",
    "Permit",
    "PromptRenderer",
    "Settings",
    "TextDelta",
]
