"""The session store contract: what the middleware and the session handle need."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping


class SessionStore(ABC):
    """Server-side session records: one record per session id, one field per session key.

    Values are opaque strings (the serializer's JSON). Every method raises
    :class:`~sessions.errors.StoreUnavailable` when the backend cannot be reached.
    """

    absolute_lifetime: float | None = None
    """Seconds a session may live at most, whatever its activity; also the cookie's max age."""

    @abstractmethod
    async def load(self, session_id: str) -> dict[str, str] | None:
        """The record's fields, or ``None`` when the id is unknown or expired.

        Loading counts as activity: it restarts the idle timeout.
        """

    @abstractmethod
    async def save(
        self,
        session_id: str,
        changed: Mapping[str, str],
        deleted: Collection[str],
        *,
        create: bool = True,
    ) -> None:
        """Write ``changed`` fields and remove ``deleted`` ones, leaving other fields alone.

        When no live record exists (never created, expired, or deleted meanwhile), a new one is
        created only if ``create`` is true; otherwise the write is dropped, so a request that
        outlives its session never brings it back.
        """

    @abstractmethod
    async def delete(self, session_id: str) -> None:
        """Remove the record; unknown ids are ignored."""

    @abstractmethod
    async def acquire_lock(self, session_id: str, name: str, ttl: float) -> str | None:
        """Take the lock ``name`` of this session for ``ttl`` seconds.

        Returns the token that renews and releases it, or ``None`` while someone else holds it.
        """

    @abstractmethod
    async def renew_lock(self, session_id: str, name: str, token: str, ttl: float) -> bool:
        """Extend the lock to ``ttl`` seconds from now; ``False`` if ``token`` lost it."""

    @abstractmethod
    async def release_lock(self, session_id: str, name: str, token: str) -> bool:
        """Give the lock back; ``False`` if ``token`` no longer held it."""

    @abstractmethod
    async def ping(self) -> None:
        """Return once the backend answers; raise ``StoreUnavailable`` otherwise."""
