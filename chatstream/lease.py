"""The per-session generation lease: one generation per session at a time, cluster-wide."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from sessions import Session, StoreUnavailable

from .errors import ServiceUnavailable, SessionBusy

logger = logging.getLogger("chatstream")

LEASE_NAME = "generation"


@contextlib.asynccontextmanager
async def session_lease(session: Session, ttl: float) -> AsyncIterator[asyncio.Event]:
    """Hold the session's generation lease; yields an event set if the lease was lost.

    The lease lives in the store with a TTL and is renewed every ``ttl / 3`` while held, so a
    crashed instance frees it within ``ttl``. Raises :class:`SessionBusy` when another request
    of this session holds it.
    """
    try:
        token = await session.acquire_lock(LEASE_NAME, ttl)
    except StoreUnavailable as exc:
        raise ServiceUnavailable(str(exc), retry_after=exc.retry_after) from exc
    if token is None:
        raise SessionBusy("this session is already generating a reply")
    lost = asyncio.Event()
    renewer = asyncio.create_task(_renew(session, token, ttl, lost))
    try:
        yield lost
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        try:
            await asyncio.shield(session.release_lock(LEASE_NAME, token))
        except StoreUnavailable:
            logger.warning("could not release a session lease; it expires in %.0f s", ttl)


async def _renew(session: Session, token: str, ttl: float, lost: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    renewed_at = loop.time()
    while True:
        await asyncio.sleep(ttl / 3)
        try:
            if not await session.renew_lock(LEASE_NAME, token, ttl):
                break
            renewed_at = loop.time()
        except StoreUnavailable:
            if loop.time() - renewed_at >= ttl:
                break
            logger.warning("could not renew a session lease; retrying")
    lost.set()
