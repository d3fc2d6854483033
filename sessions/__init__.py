"""Server-side sessions for ASGI apps: a signed cookie names a record in Redis."""

from __future__ import annotations

from sessions.embedded import embedded_redis
from sessions.errors import (
    SerializationError,
    SessionError,
    SessionNotLoaded,
    StoreUnavailable,
)
from sessions.handle import Session
from sessions.middleware import SessionMiddleware
from sessions.serializer import dumps, loads, register_type
from sessions.stores import RedisSessionStore, SessionStore

__all__ = [
    "RedisSessionStore",
    "SerializationError",
    "Session",
    "SessionError",
    "SessionMiddleware",
    "SessionNotLoaded",
    "SessionStore",
    "StoreUnavailable",
    "dumps",
    "embedded_redis",
    "loads",
    "register_type",
]
