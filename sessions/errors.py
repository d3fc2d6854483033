"""Errors raised by the session layer.

SessionError                 root of everything this package raises
├── StoreUnavailable         the store could not be reached or failed (HTTP 503 + Retry-After)
├── SerializationError       a value cannot be stored as JSON / a stored value cannot be read
└── SessionNotLoaded         the session was used before ``await session.load()`` (autoload off)
"""

from __future__ import annotations


class SessionError(Exception):
    """Root of the session layer's errors."""


class StoreUnavailable(SessionError):
    """The session store could not be reached in time, or answered with an error.

    The message is a fixed text (the cause, which may name hosts, is chained and logged). The
    middleware answers it with ``503 {"error": {"code": "store_unavailable"}}`` and a
    ``Retry-After`` header; the chat layer maps it the same way.
    """

    retry_after: int = 1

    def __init__(self, message: str = "session store unavailable", retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SerializationError(SessionError):
    """A session value is not JSON, or names a type that is not registered."""


class SessionNotLoaded(SessionError):
    """The session was used before it was loaded.

    With ``SessionMiddleware(..., autoload=False)`` a request's session is read from the store
    only when the app awaits ``request.state.session.load()``; using it before that is a bug.
    """
