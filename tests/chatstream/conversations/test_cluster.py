"""RedisConversationStore on a real 3-master Redis Cluster: a conversation's keys and its
owner's index are in different slots by design, and each script touches one slot."""

from __future__ import annotations

import pytest
from redis.asyncio.cluster import RedisCluster

from chatstream.conversations.owners import new_anonymous_owner, user_owner
from chatstream.conversations.prompt import Message
from chatstream.conversations.redis_store import RedisConversationStore
from chatstream.keys import ConversationKeys, OwnerKeys

pytestmark = pytest.mark.redis

ALICE = user_owner("alice")


async def test_every_operation_works_across_slots(cluster_client: RedisCluster) -> None:
    store = RedisConversationStore(cluster_client, anonymous_ttl=60)
    visitor = new_anonymous_owner()
    info = await store.create(visitor, title=None, system_prompt="Be brief.", limit=10)
    keys, index = ConversationKeys.build(info.id), OwnerKeys.build(visitor)
    slots = {cluster_client.keyslot(key) for key in (keys.record, keys.lease)}
    assert len(slots) == 1
    assert cluster_client.keyslot(index.index) == cluster_client.keyslot(index.summaries)
    assert cluster_client.keyslot(index.index) not in slots

    conversation = await store.load(visitor, info.id)
    assert conversation is not None
    turn = [Message("user", "hello", "u-1"), Message("assistant", "hi", "a-1", "stop")]
    assert await store.write(visitor, conversation, start=0, messages=turn) is not None
    assert await store.set_feedback(visitor, info.id, "a-1", {"is_like": True})
    assert await store.rename(visitor, info.id, "Greetings") is not None
    lease = store.lease(info.id)
    token = await lease.acquire("a-2", 10)
    assert token is not None and await lease.running() == "a-2"
    await lease.release(token)
    # Signing in moves the conversation to the user's index, in another slot.
    assert await store.transfer(visitor, ALICE) == 1
    (listed,) = (await store.page(ALICE, limit=10, before=None)).conversations
    assert (listed.id, listed.title, listed.message_count) == (info.id, "Greetings", 2)
    moved = await store.load(ALICE, info.id)
    assert moved is not None and [m.content for m in moved.prompt.messages] == ["hello", "hi"]
    assert moved.feedback == {"a-1": {"is_like": True}}
    assert await store.delete(ALICE, info.id)
    assert await store.load(ALICE, info.id) is None
    assert (await store.page(ALICE, limit=10, before=None)).conversations == []
