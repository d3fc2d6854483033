from __future__ import annotations

import asyncio
import contextlib

import pytest
from redis.asyncio import Redis

from chatstream.admission.lease import conversation_lease
from chatstream.conversations.redis_store import RedisConversationLease, RedisConversationStore
from chatstream.errors import SessionBusy
from chatstream.keys import ConversationKeys


class SwallowingLease(RedisConversationLease):
    """Its renewal swallows a cancellation that arrives mid-call, as a Redis call with a socket
    timeout can on Python 3.11 (``asyncio.wait_for``)."""

    renewing = asyncio.Event()

    async def renew(self, token: str, ttl: float) -> bool:
        self.renewing.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.05)
        return await super().renew(token, ttl)


async def test_the_lease_is_released_even_if_its_renewal_swallows_the_cancellation(
    redis: Redis,
) -> None:
    store = RedisConversationStore(redis)
    lease = SwallowingLease(store, ConversationKeys.build("c0ffee").lease)

    async def hold() -> None:
        async with conversation_lease(lease, "m1", ttl=0.3):
            await lease.renewing.wait()

    holding = asyncio.create_task(hold())
    done, _ = await asyncio.wait({holding}, timeout=2)
    assert holding in done, "the lease is still renewed and held"
    assert await store.lease("c0ffee").acquire("m2", 1) is not None  # released


async def test_a_held_lease_names_the_reply_that_holds_it(redis: Redis) -> None:
    store = RedisConversationStore(redis)
    async with conversation_lease(store.lease("c0ffee"), "running-reply", ttl=5):
        with pytest.raises(SessionBusy) as busy:
            async with conversation_lease(store.lease("c0ffee"), "another", ttl=5):
                pass
    assert busy.value.details() == {"message_id": "running-reply"}
