"""Errors of the chat layer: each class carries the HTTP status and error code it answers with.

    ChatStreamError                     root; ``status`` and ``code`` give the HTTP answer;
                                        itself 500 internal_error (an unexpected failure)
    ├── InvalidJSON                     400 invalid_json
    ├── InvalidHost                     400 invalid_host (Host not in the allowed hosts)
    ├── Unauthorized                    401 unauthorized (WWW-Authenticate: Bearer)
    ├── ForbiddenOrigin                 403 forbidden_origin (a cross-site request)
    ├── NotFound                        404 not_found
    ├── MethodNotAllowed                405 method_not_allowed
    ├── RequestTimeout                  408 request_timeout (the body came too slowly)
    ├── InputTooLong                    413 input_too_long
    ├── UnsupportedMediaType            415 unsupported_media_type (a body that is not JSON)
    ├── InvalidRequest                  422 invalid_request
    ├── SessionBusy                     409 session_busy
    ├── NothingToRegenerate             409 nothing_to_regenerate
    ├── NothingToContinue               409 nothing_to_continue
    ├── NothingRunning                  409 nothing_running
    ├── ConversationChanged             409 conversation_changed (by another turn meanwhile)
    ├── ConversationFull                409 conversation_full
    ├── TooManyConversations            409 too_many_conversations
    ├── QueueFull                       429 queue_full (Retry-After)
    ├── TooManyRequests                 429 too_many_requests (Retry-After; one client's limits)
    ├── QueueTimeout                    503 queue_timeout (Retry-After)
    ├── ServiceUnavailable              503 store_unavailable (Retry-After)
    ├── UpstreamUnavailable             503 upstream_unavailable (Retry-After; a remote engine)
    └── GenerationFailed                500 generation_failed (the reply could not be completed)

This module knows no web framework: :mod:`chatstream.http.errors` turns these (and the session
layer's :class:`~sessions.StoreUnavailable`) into responses, in one place. Errors of lower
layers (redis-py, the session store) are translated where they are caught, with
``raise ... from exc``. A custom :class:`~chatstream.admission.base.Admission` raises
:class:`QueueFull`, :class:`QueueTimeout` and :class:`ServiceUnavailable`.

Configuration mistakes are not part of this tree: they are plain ``ValueError`` subclasses
(:class:`~chatstream.settings.ConfigError`, :class:`~chatstream.model.ModelNotFoundError`,
:class:`~chatstream.engines.rendering.MissingChatTemplateError`), raised before serving starts.
"""

from __future__ import annotations

from typing import ClassVar


class ChatStreamError(Exception):
    """Root of the chat layer's errors: ``status`` and ``code`` are the HTTP answer's, and
    ``message`` the text a client sees."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    retry_after: int | None = None

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retry_after is not None:
            self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        """The headers the answer carries besides its JSON body."""
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}

    def details(self) -> dict[str, str]:
        """Fields the JSON error carries besides ``code`` and ``message``."""
        return {}


class InvalidJSON(ChatStreamError):
    status = 400
    code = "invalid_json"


class InvalidHost(ChatStreamError):
    status = 400
    code = "invalid_host"


class ForbiddenOrigin(ChatStreamError):
    status = 403
    code = "forbidden_origin"


class UnsupportedMediaType(ChatStreamError):
    status = 415
    code = "unsupported_media_type"


class InvalidRequest(ChatStreamError):
    status = 422
    code = "invalid_request"


class RequestTimeout(ChatStreamError):
    status = 408
    code = "request_timeout"


class InputTooLong(ChatStreamError):
    status = 413
    code = "input_too_long"


class NotFound(ChatStreamError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ChatStreamError):
    status = 405
    code = "method_not_allowed"


class Unauthorized(ChatStreamError):
    status = 401
    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "WWW-Authenticate": "Bearer"}


class SessionBusy(ChatStreamError):
    """A reply of the conversation is generating: ``message_id`` names it (follow it with
    ``GET /chat_stream/{message_id}``)."""

    status = 409
    code = "session_busy"

    def __init__(self, message: str, *, message_id: str | None = None) -> None:
        super().__init__(message)
        self.message_id = message_id

    def details(self) -> dict[str, str]:
        return {} if self.message_id is None else {"message_id": self.message_id}


class NothingToRegenerate(ChatStreamError):
    status = 409
    code = "nothing_to_regenerate"


class NothingToContinue(ChatStreamError):
    status = 409
    code = "nothing_to_continue"


class NothingRunning(ChatStreamError):
    status = 409
    code = "nothing_running"


class ConversationChanged(ChatStreamError):
    status = 409
    code = "conversation_changed"


class ConversationFull(ChatStreamError):
    status = 409
    code = "conversation_full"


class TooManyConversations(ChatStreamError):
    status = 409
    code = "too_many_conversations"


class QueueFull(ChatStreamError):
    status = 429
    code = "queue_full"
    retry_after = 1


class TooManyRequests(ChatStreamError):
    """One client is over its own limits (requests at once, or turns per minute)."""

    status = 429
    code = "too_many_requests"
    retry_after = 1


class QueueTimeout(ChatStreamError):
    status = 503
    code = "queue_timeout"
    retry_after = 5


class ServiceUnavailable(ChatStreamError):
    status = 503
    code = "store_unavailable"
    retry_after = 1


class UpstreamUnavailable(ChatStreamError):
    status = 503
    code = "upstream_unavailable"
    retry_after = 1


class GenerationFailed(ChatStreamError):
    status = 500
    code = "generation_failed"
