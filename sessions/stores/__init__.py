from __future__ import annotations

from sessions.stores.base import SessionStore
from sessions.stores.redis import RedisSessionStore

__all__ = ["RedisSessionStore", "SessionStore"]
