"""The session handle a request sees at ``request.state.session``."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, MutableMapping
from typing import Any

from sessions.data import SessionData
from sessions.stores.base import SessionStore


def new_session_id() -> str:
    """A fresh, unguessable session id (256 random bits)."""
    return secrets.token_urlsafe(32)


class Session:
    """One request's view of its session.

    A handle loaded from the store only ever updates that record: if the record ends while the
    request runs (expired, cleared or rotated by another request), its saves are dropped. Only a
    handle that minted its id (a new session, or after ``clear_session``/``rotate``) creates a
    record, once. Locks belong to the current id.
    """

    def __init__(
        self,
        store: SessionStore,
        session_id: str | None = None,
        stored: Mapping[str, str] | None = None,
    ) -> None:
        self._store = store
        self._is_new = session_id is None
        self._id = new_session_id() if session_id is None else session_id
        self._creating = self._is_new
        self._accessed = False
        self._data = SessionData(stored or {})

    @property
    def store(self) -> SessionStore:
        return self._store

    @property
    def is_new(self) -> bool:
        """True when this request started the session (no valid cookie for a live record)."""
        return self._is_new

    @property
    def in_use(self) -> bool:
        """True when the current id holds data or ``get_session()`` was called for it."""
        return self._accessed or self._data.has_data

    def get_session(self) -> MutableMapping[str, Any]:
        self._accessed = True
        return self._data

    def get_session_id(self) -> str:
        return self._id

    async def save_session(self) -> None:
        """Write the keys that changed or were deleted since loaded or last saved."""
        changed, deleted, current = self._data.changes()
        if changed or deleted:
            await self._store.save(self._id, changed, deleted, create=self._creating)
            self._creating = False
        self._data.stored = current

    async def clear_session(self) -> None:
        """Delete the record and all data; values set afterwards start a session with a new id."""
        await self._store.delete(self._id)
        self._id, self._creating, self._accessed = new_session_id(), True, False
        self._data.reset({})

    async def rotate(self) -> None:
        """Move the data to a new id and delete the old record (call it on login)."""
        new_id = new_session_id()
        current = self._data.encoded()
        if current:
            await self._store.save(new_id, current, (), create=True)
        await self._store.delete(self._id)
        self._id, self._creating, self._accessed = new_id, not current, False
        self._data.stored = current

    async def acquire_lock(self, name: str, ttl: float) -> str | None:
        return await self._store.acquire_lock(self._id, name, ttl)

    async def renew_lock(self, name: str, token: str, ttl: float) -> bool:
        return await self._store.renew_lock(self._id, name, token, ttl)

    async def release_lock(self, name: str, token: str) -> bool:
        return await self._store.release_lock(self._id, name, token)
