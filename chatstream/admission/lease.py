"""The per-session generation lease: one generation per session at a time, cluster-wide."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from sessions import Session, StoreUnavailable

from ..errors import ServiceUnavailable, SessionBusy
from ..keys import GENERATION_LEASE
from ..tasks import Renewal

logger = logging.getLogger("chatstream")


@contextlib.asynccontextmanager
async def session_lease(session: Session, ttl: float) -> AsyncIterator[asyncio.Event]:
    """Hold the session's generation lease; yields an event set if the lease was lost.

    The lease lives in the store with a TTL and is renewed every ``ttl / 3`` while held, so a
    crashed instance frees it within ``ttl``. Raises :class:`SessionBusy` when another request
    of this session holds it.
    """
    try:
        token = await session.acquire_lock(GENERATION_LEASE, ttl)
    except StoreUnavailable as exc:
        raise ServiceUnavailable(
            "the session store is unavailable", retry_after=exc.retry_after
        ) from exc
    if token is None:
        raise SessionBusy("this session is already generating a reply")

    async def renew() -> bool:
        return await session.renew_lock(GENERATION_LEASE, token, ttl)

    renewal = Renewal(renew, ttl, what="a session lease")
    try:
        yield renewal.lost
    finally:
        await renewal.stop()
        try:
            await asyncio.shield(session.release_lock(GENERATION_LEASE, token))
        except StoreUnavailable:
            logger.warning("could not release a session lease; it expires in %.0f s", ttl)
