"""Errors to HTTP answers, in one place: every route, the streamed reply and the OpenAI API
answer a failure through :func:`error_response`.

The JSON shape is always ``{"error": {"code": str, "message": str}}``. A chat-layer error
answers with its own status, code, message and headers; the session store being unreachable
(or any Redis error that reached this far) is ``503 store_unavailable`` with ``Retry-After``;
anything else is a ``500 internal_error``
with a fixed message (the details go to the log, never to the client).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sessions import StoreUnavailable

from ..errors import ChatStreamError, ServiceUnavailable
from ..redis_client import REDIS_ERRORS
from .responses import PRIVATE_HEADERS

if TYPE_CHECKING:
    from ..chat_stream import ChatStream

logger = logging.getLogger("chatstream")

Endpoint = Callable[["ChatStream", Request], Awaitable[Response]]
R = TypeVar("R", bound=JSONResponse)

UNAVAILABLE_MESSAGE = "the session store is unavailable; try again shortly"


def as_chat_error(exc: Exception) -> ChatStreamError:
    """The chat-layer error that answers ``exc``."""
    if isinstance(exc, ChatStreamError):
        return exc
    if isinstance(exc, StoreUnavailable):
        return ServiceUnavailable(UNAVAILABLE_MESSAGE, retry_after=exc.retry_after)
    if isinstance(exc, (*REDIS_ERRORS, OSError)):  # any Redis failure a lower layer let through
        logger.warning("store error answered with a 503: %r", exc)
        return ServiceUnavailable(UNAVAILABLE_MESSAGE)
    logger.error("unexpected error answered with a 500", exc_info=exc)
    return ChatStreamError("the request could not be completed")


def error_response(exc: Exception, response_class: type[R] = JSONResponse) -> R:  # type: ignore[assignment]
    """The JSON error answer to ``exc`` (a ``response_class``)."""
    error = as_chat_error(exc)
    body = {"error": {"code": error.code, "message": error.message, **error.details()}}
    return response_class(body, error.status, headers={**PRIVATE_HEADERS, **error.headers()})


def json_errors(endpoint: Endpoint) -> Endpoint:
    """Answer whatever ``endpoint`` raises with its JSON error."""

    @functools.wraps(endpoint)
    async def wrapper(chat_stream: ChatStream, request: Request) -> Response:
        try:
            return await endpoint(chat_stream, request)
        except Exception as exc:
            return error_response(exc)

    return wrapper
