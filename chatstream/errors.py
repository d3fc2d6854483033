"""Errors of the chat layer, each mapped once to an HTTP status and an error code.

    ChatStreamError                     root; ``status`` and ``code`` give the HTTP answer
    ├── InvalidJSON                     400 invalid_json
    ├── InvalidRequest                  422 invalid_request
    ├── InputTooLong                    413 input_too_long
    ├── NotFound                        404 not_found
    ├── Unauthorized                    401 unauthorized
    ├── SessionBusy                     409 session_busy
    ├── NothingToRegenerate             409 nothing_to_regenerate
    ├── QueueFull                       429 queue_full (Retry-After)
    ├── QueueTimeout                    503 queue_timeout (Retry-After)
    ├── ServiceUnavailable              503 store_unavailable (Retry-After)
    └── GenerationFailed                500 generation_failed (the reply could not be completed)

Errors from lower layers (redis-py, the session store) are translated at the boundary with
``raise ... from exc``.
"""

from __future__ import annotations

from typing import ClassVar

from starlette.responses import JSONResponse


class ChatStreamError(Exception):
    """Root of the chat layer's errors."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    retry_after: int | None = None

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retry_after is not None:
            self.retry_after = retry_after

    def to_response(self) -> JSONResponse:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return error_response(self.status, self.code, self.message, headers=headers)


class InvalidJSON(ChatStreamError):
    status = 400
    code = "invalid_json"


class InvalidRequest(ChatStreamError):
    status = 422
    code = "invalid_request"


class InputTooLong(ChatStreamError):
    status = 413
    code = "input_too_long"


class NotFound(ChatStreamError):
    status = 404
    code = "not_found"


class Unauthorized(ChatStreamError):
    status = 401
    code = "unauthorized"

    def to_response(self) -> JSONResponse:
        response = super().to_response()
        response.headers["WWW-Authenticate"] = "Bearer"
        return response


class SessionBusy(ChatStreamError):
    status = 409
    code = "session_busy"


class NothingToRegenerate(ChatStreamError):
    status = 409
    code = "nothing_to_regenerate"


class QueueFull(ChatStreamError):
    status = 429
    code = "queue_full"
    retry_after = 1


class QueueTimeout(ChatStreamError):
    status = 503
    code = "queue_timeout"
    retry_after = 5


class ServiceUnavailable(ChatStreamError):
    status = 503
    code = "store_unavailable"
    retry_after = 1


class GenerationFailed(ChatStreamError):
    status = 500
    code = "generation_failed"


def error_response(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The one JSON error shape: ``{"error": {"code": ..., "message": ...}}``."""
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)
