"""The conversation lease: one reply at a time per conversation, cluster-wide."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from ..conversations.store import ConversationLease
from ..errors import ChatStreamError, SessionBusy
from ..tasks import Renewal

logger = logging.getLogger("chatstream")


@contextlib.asynccontextmanager
async def conversation_lease(
    lease: ConversationLease, message_id: str, ttl: float
) -> AsyncIterator[asyncio.Event]:
    """Hold ``lease`` for the reply ``message_id``; yields an event set if the lease was lost.

    The lease lives in the store with a TTL and is renewed every ``ttl / 3`` while held, so a
    crashed instance frees it within ``ttl``. Raises :class:`SessionBusy` (naming the reply that
    runs, so that the client can follow it instead) when another reply holds it.
    """
    token = await lease.acquire(message_id, ttl)
    if token is None:
        running = await lease.running()
        raise SessionBusy("this conversation is already generating a reply", message_id=running)

    async def renew() -> bool:
        return await lease.renew(token, ttl)

    renewal = Renewal(renew, ttl, what="a conversation lease")
    try:
        yield renewal.lost
    finally:
        await renewal.stop()
        try:
            await asyncio.shield(lease.release(token))
        except ChatStreamError:
            logger.warning("could not release a conversation lease; it expires in %.0f s", ttl)
