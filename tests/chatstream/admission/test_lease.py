from __future__ import annotations

import asyncio
import contextlib

from redis.asyncio import Redis

from chatstream.admission.lease import session_lease
from chatstream.keys import GENERATION_LEASE
from sessions import RedisSessionStore, Session


class SwallowingStore(RedisSessionStore):
    """Its lease renewal swallows a cancellation that arrives mid-call, as a Redis call with a
    socket timeout can on Python 3.11 (``asyncio.wait_for``)."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis)
        self.renewing = asyncio.Event()

    async def renew_lock(self, session_id: str, name: str, token: str, ttl: float) -> bool:
        self.renewing.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.05)
        return await super().renew_lock(session_id, name, token, ttl)


async def test_the_lease_is_released_even_if_its_renewal_swallows_the_cancellation(
    redis: Redis,
) -> None:
    store = SwallowingStore(redis)
    session = Session(store)

    async def hold() -> None:
        async with session_lease(session, ttl=0.3):
            await store.renewing.wait()

    holding = asyncio.create_task(hold())
    done, _ = await asyncio.wait({holding}, timeout=2)
    assert holding in done, "the lease is still renewed and held"
    assert await session.acquire_lock(GENERATION_LEASE, 1) is not None  # released
