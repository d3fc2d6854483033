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
    lost, done = asyncio.Event(), asyncio.Event()
    renewer = asyncio.create_task(_renew(session, token, ttl, lost, done))
    try:
        yield lost
    finally:
        # The event ends the renewer even where the cancellation gets lost: on Python 3.11 a
        # Redis call with a socket timeout (asyncio.wait_for) can swallow one, and the renewer
        # would then renew the lease, and be awaited here, forever.
        done.set()
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        try:
            await asyncio.shield(session.release_lock(LEASE_NAME, token))
        except StoreUnavailable:
            logger.warning("could not release a session lease; it expires in %.0f s", ttl)


async def _renew(
    session: Session, token: str, ttl: float, lost: asyncio.Event, done: asyncio.Event
) -> None:
    loop = asyncio.get_running_loop()
    renewed_at = loop.time()
    while True:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ttl / 3):
                await done.wait()
        if done.is_set():
            return
        try:
            if not await session.renew_lock(LEASE_NAME, token, ttl):
                break
            renewed_at = loop.time()
        except StoreUnavailable:
            if loop.time() - renewed_at >= ttl:
                break
            logger.warning("could not renew a session lease; retrying")
    lost.set()
