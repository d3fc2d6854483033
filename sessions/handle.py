"""The session handle a request sees at ``request.state.session``."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from sessions.data import SessionData
from sessions.errors import SessionNotLoaded
from sessions.stores.base import SessionStore


def new_session_id() -> str:
    """A fresh, unguessable session id (256 random bits)."""
    return secrets.token_urlsafe(32)


class Session:
    """One request's view of its session.

    ``Session(store)`` starts a new session and ``Session(store, session_id, stored)`` holds the
    record ``stored``; :meth:`unloaded` makes a handle that reads its record on :meth:`load`, so
    a request that never needs its session never reaches the store. Until then, only
    :meth:`load`, :meth:`provide`, :attr:`loaded` and :attr:`store` may be used; the rest raise
    :class:`~sessions.errors.SessionNotLoaded`.

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
        self._requested = session_id
        self._loading = asyncio.Lock()
        self._data = SessionData()
        self._start(session_id, stored or {})

    @classmethod
    def unloaded(cls, store: SessionStore, session_id: str | None) -> Session:
        """A handle that reads the record of ``session_id`` (a verified cookie's) on
        :meth:`load`; without one, or if the store does not hold it, a new session starts."""
        session = cls(store)
        session._requested, session._loaded = session_id, False
        return session

    def _start(self, session_id: str | None, stored: Mapping[str, str]) -> None:
        self._is_new = session_id is None
        self._id = new_session_id() if session_id is None else session_id
        self._creating = self._is_new
        self._data.reset(stored)
        self._loaded = True

    async def load(self) -> None:
        """Read the record, once: later calls return at once. Raises
        :class:`~sessions.errors.StoreUnavailable` (and stays unloaded) when the store fails."""
        async with self._loading:
            if self._loaded:
                return
            requested = self._requested
            stored = None if requested is None else await self._store.load(requested)
            self._start(None if stored is None else requested, stored or {})

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def store(self) -> SessionStore:
        return self._store

    @property
    def is_new(self) -> bool:
        """True when this request started the session (no valid cookie for a live record)."""
        self._check_loaded()
        return self._is_new

    @property
    def has_data(self) -> bool:
        """True when the current id holds values to store (provided ones do not count)."""
        self._check_loaded()
        return self._data.has_data

    def get_session(self) -> MutableMapping[str, Any]:
        self._check_loaded()
        return self._data

    def provide(self, key: str, value: Any) -> None:
        """Show ``value`` under ``key`` for this request only: never stored, never counted as
        data, replaced by a stored value if the app assigns ``key``. Allowed before loading."""
        self._data.provide(key, value)

    def get_session_id(self) -> str:
        self._check_loaded()
        return self._id

    async def save_session(self) -> None:
        """Write the keys that changed or were deleted since loaded or last saved."""
        self._check_loaded()
        changed, deleted, current = self._data.changes()
        if changed or deleted:
            await self._store.save(self._id, changed, deleted, create=self._creating)
            self._creating = False
        self._data.stored = current

    async def clear_session(self) -> None:
        """Delete the record and all data; values set afterwards start a session with a new id."""
        self._check_loaded()
        await self._store.delete(self._id)
        self._id, self._creating = new_session_id(), True
        self._data.clear()
        self._data.reset({})

    async def rotate(self) -> None:
        """Move the data to a new id and delete the old record (call it on login)."""
        self._check_loaded()
        new_id = new_session_id()
        current = self._data.encoded()
        if current:
            await self._store.save(new_id, current, (), create=True)
        await self._store.delete(self._id)
        self._id, self._creating = new_id, not current
        self._data.stored = current

    async def acquire_lock(self, name: str, ttl: float) -> str | None:
        self._check_loaded()
        return await self._store.acquire_lock(self._id, name, ttl)

    async def renew_lock(self, name: str, token: str, ttl: float) -> bool:
        self._check_loaded()
        return await self._store.renew_lock(self._id, name, token, ttl)

    async def release_lock(self, name: str, token: str) -> bool:
        self._check_loaded()
        return await self._store.release_lock(self._id, name, token)

    def _check_loaded(self) -> None:
        if not self._loaded:
            raise SessionNotLoaded(
                "the session is not loaded: `await request.state.session.load()` first, "
                "or install SessionMiddleware with autoload=True"
            )


class SessionView(MutableMapping[str, Any]):
    """The session's values at ``scope["session"]``, for code written against Starlette's
    ``request.session`` (Authlib, CSRF middlewares, admin panels). Every access goes through
    :meth:`Session.get_session`, so it follows ``clear_session`` and ``rotate``, and raises
    :class:`~sessions.errors.SessionNotLoaded` before the session is loaded."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def __getitem__(self, key: str) -> Any:
        return self._session.get_session()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._session.get_session()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._session.get_session()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._session.get_session())

    def __len__(self) -> int:
        return len(self._session.get_session())

    def clear(self) -> None:
        self._session.get_session().clear()
