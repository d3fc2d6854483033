"""How a chat stream ended, and the completion callback that is told so."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from enum import StrEnum

from starlette.requests import Request

logger = logging.getLogger("chatstream")


class Outcome(StrEnum):
    """Passed to the completion callback; compares equal to its plain string."""

    SUCCESS = "success"
    CLIENT_DISCONNECTED_WHILE_STREAMING = "client_disconnected_while_streaming"
    CLIENT_DISCONNECTED_BEFORE_STREAMING = "client_disconnected_before_streaming"
    UNKNOWN_ERROR_OCCURRED = "unknown_error_occurred"
    REJECTED = "rejected"


CompletionCallback = Callable[[Request, Outcome], Awaitable[object] | object]
"""``fn(request, outcome)``: a plain function or a coroutine function."""


async def run_callback(callback: Callable[..., object] | None, *args: object) -> None:
    """Run a user's callback or hook (plain or coroutine function); one that raises is logged
    and harms nothing else."""
    if callback is None:
        return
    try:
        result = callback(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.exception("callback %r raised", callback)
