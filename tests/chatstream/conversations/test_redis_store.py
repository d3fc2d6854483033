"""RedisConversationStore, on real Redis where ``REDIS_URL`` is set (CI), else the embedded
store (the ``redis`` fixture)."""

from __future__ import annotations

import itertools
import logging

import pytest
from redis.asyncio import Redis

from chatstream.conversations.owners import new_anonymous_owner, user_owner
from chatstream.conversations.prompt import Message
from chatstream.conversations.redis_store import RedisConversationStore
from chatstream.conversations.store import Conversation, ConversationStore
from chatstream.errors import ServiceUnavailable, TooManyConversations
from chatstream.keys import ConversationKeys, OwnerKeys
from tests.redis_errors import OUTAGES, Breakable, error_id

ALICE, BOB = user_owner("alice"), user_owner("bob")


@pytest.fixture
def store(redis: Redis) -> RedisConversationStore:
    return RedisConversationStore(redis, anonymous_ttl=60)


def turn(text: str, reply: str) -> list[Message]:
    return [Message("user", text, f"u-{text}"), Message("assistant", reply, f"a-{text}", "stop")]


async def loaded(store: ConversationStore, owner: str, conversation_id: str) -> Conversation:
    conversation = await store.load(owner, conversation_id)
    assert conversation is not None
    return conversation


async def test_a_conversation_round_trips(store: RedisConversationStore) -> None:
    info = await store.create(ALICE, title=None, system_prompt="Be brief.", limit=10)
    assert (info.title, info.message_count) == ("New chat", 0)
    conversation = await loaded(store, ALICE, info.id)
    assert conversation.prompt.system_prompt == "Be brief."
    written = await store.write(
        ALICE, conversation, start=0, messages=turn("What is Redis?", "A store.")
    )
    assert written is not None
    again = await loaded(store, ALICE, info.id)
    assert [m.content for m in again.prompt.messages] == ["What is Redis?", "A store."]
    assert again.prompt.messages[0].message_id == "u-What is Redis?"
    assert (again.info.title, again.info.message_count, again.version) == ("What is Redis?", 2, 1)
    assert again.info.updated_at >= info.updated_at


async def test_a_title_given_at_creation_sticks(store: RedisConversationStore) -> None:
    named = await store.create(ALICE, title="Groceries", system_prompt=None, limit=10)
    untitled = await store.create(ALICE, title=None, system_prompt=None, limit=10)
    for info in (named, untitled):
        conversation = await loaded(store, ALICE, info.id)
        await store.write(ALICE, conversation, start=0, messages=turn("milk, eggs", "Noted."))
    titles = {c.id: c.title for c in (await store.page(ALICE, limit=10, before=None)).conversations}
    assert (titles[named.id], titles[untitled.id]) == ("Groceries", "milk, eggs")


async def test_another_owner_sees_nothing(store: RedisConversationStore) -> None:
    info = await store.create(ALICE, title="mine", system_prompt=None, limit=10)
    assert await store.load(BOB, info.id) is None
    assert await store.rename(BOB, info.id, "stolen") is None
    assert not await store.set_feedback(BOB, info.id, "m", {"is_like": True})
    assert not await store.delete(BOB, info.id)
    assert (await store.page(BOB, limit=10, before=None)).conversations == []
    assert (await loaded(store, ALICE, info.id)).info.title == "mine"
    for bad_id in ("", "{x}", "nope", "a" * 32):
        assert await store.load(ALICE, bad_id) is None


async def test_writes_replace_from_a_position_and_feedback_goes_with_dropped_messages(
    store: RedisConversationStore,
) -> None:
    info = await store.create(ALICE, title=None, system_prompt=None, limit=10)
    empty = await loaded(store, ALICE, info.id)
    one = await store.write(ALICE, empty, start=0, messages=turn("one", "1"))
    assert one is not None
    assert await store.write(ALICE, one, start=2, messages=turn("two", "2")) is not None
    assert await store.set_feedback(ALICE, info.id, "a-one", {"is_like": True})
    assert await store.set_feedback(ALICE, info.id, "a-two", {"is_like": False})
    conversation = await loaded(store, ALICE, info.id)
    assert set(conversation.feedback) == {"a-one", "a-two"}
    edited = [Message("user", "deux", "u-two"), Message("assistant", "2!", "a-deux", "stop")]
    assert await store.write(ALICE, conversation, start=2, messages=edited) is not None  # an edit
    stored = await loaded(store, ALICE, info.id)
    assert [m.content for m in stored.prompt.messages] == ["one", "1", "deux", "2!"]
    assert set(stored.feedback) == {"a-one"}
    shorter = await store.write(ALICE, stored, start=1, messages=[])
    assert shorter is not None
    final = await loaded(store, ALICE, info.id)
    assert [m.content for m in final.prompt.messages] == ["one"]
    assert final.feedback == {}
    record = ConversationKeys.build(info.id).record
    assert sorted(await store.redis.hkeys(record)) == [b"m:0", b"meta"]


async def test_the_stored_size_follows_every_write_without_a_recount(
    store: RedisConversationStore,
) -> None:
    def counted(conversation: Conversation) -> int:
        return sum(len(m.content.encode()) for m in conversation.prompt.messages)

    info = await store.create(ALICE, title=None, system_prompt=None, limit=10)
    conversation = await loaded(store, ALICE, info.id)
    writes = [
        (0, turn("héllo", "wörld")),  # an append
        (2, turn("again", "and again")),
        (3, [Message("assistant", "regenerated ✓", "a-r", "stop")]),  # a regenerate
        (2, turn("edited", "anew")),  # an edit drops what came after
        (1, []),  # cut short
    ]
    for start, messages in writes:
        written = await store.write(ALICE, conversation, start=start, messages=messages)
        assert written is not None
        reread = await loaded(store, ALICE, info.id)
        assert written.size == reread.size == counted(reread)
        conversation = reread if start % 2 else written  # from a load, and from a write


async def test_a_write_on_a_changed_conversation_is_refused(store: RedisConversationStore) -> None:
    info = await store.create(ALICE, title=None, system_prompt=None, limit=10)
    first = await loaded(store, ALICE, info.id)
    second = await loaded(store, ALICE, info.id)
    assert await store.write(ALICE, first, start=0, messages=turn("a", "1")) is not None
    assert await store.write(ALICE, second, start=0, messages=turn("b", "2")) is None
    assert [m.content for m in (await loaded(store, ALICE, info.id)).prompt.messages] == ["a", "1"]


async def test_a_rename_sticks_and_does_not_disturb_a_reply_being_stored(
    store: RedisConversationStore,
) -> None:
    info = await store.create(ALICE, title=None, system_prompt=None, limit=10)
    conversation = await loaded(store, ALICE, info.id)
    renamed = await store.rename(ALICE, info.id, "Trip plans")
    assert renamed is not None and renamed.title == "Trip plans"
    assert await store.write(ALICE, conversation, start=0, messages=turn("x", "y")) is not None
    listed = (await store.page(ALICE, limit=10, before=None)).conversations
    assert [(c.title, c.message_count) for c in listed] == [("Trip plans", 2)]


async def test_pages_go_from_the_most_recent_and_cursors_are_exact(
    store: RedisConversationStore,
) -> None:
    ids = [
        (await store.create(ALICE, title=f"c{i}", system_prompt=None, limit=100)).id
        for i in range(7)
    ]
    touched = await loaded(store, ALICE, ids[2])
    await store.write(ALICE, touched, start=0, messages=turn("bump", "ok"))
    everything = (await store.page(ALICE, limit=100, before=None)).conversations
    newest = everything[0].updated_at  # (several may share its millisecond, ordered by id)
    assert ids[2] in [c.id for c in everything if c.updated_at == newest]
    assert sorted(c.id for c in everything) == sorted(ids)
    assert all(a.updated_at >= b.updated_at for a, b in itertools.pairwise(everything))
    seen, cursor = [], None
    while True:
        page = await store.page(ALICE, limit=3, before=cursor)
        seen += [c.id for c in page.conversations]
        if page.next is None:
            break
        cursor = page.next
    assert seen == [c.id for c in everything]
    with pytest.raises(ValueError):
        await store.page(ALICE, limit=3, before="not-a-cursor")


async def test_an_owner_has_at_most_the_limit(store: RedisConversationStore) -> None:
    for _ in range(3):
        await store.create(ALICE, title=None, system_prompt=None, limit=3)
    with pytest.raises(TooManyConversations, match="3 conversations"):
        await store.create(ALICE, title=None, system_prompt=None, limit=3)
    await store.create(BOB, title=None, system_prompt=None, limit=3)  # per owner
    first = (await store.page(ALICE, limit=1, before=None)).conversations[0]
    assert await store.delete(ALICE, first.id)
    await store.create(ALICE, title=None, system_prompt=None, limit=3)


async def test_delete_removes_every_key(store: RedisConversationStore, redis: Redis) -> None:
    info = await store.create(ALICE, title=None, system_prompt=None, limit=10)
    conversation = await loaded(store, ALICE, info.id)
    await store.write(ALICE, conversation, start=0, messages=turn("a", "b"))
    await store.set_feedback(ALICE, info.id, "a-a", {"is_like": True})
    lease = store.lease(info.id)
    assert await lease.acquire("a-b", 10) is not None
    assert await store.delete(ALICE, info.id)
    assert await store.load(ALICE, info.id) is None
    assert not await store.delete(ALICE, info.id)
    keys = ConversationKeys.build(info.id)
    assert await redis.exists(keys.record, keys.lease) == 0
    assert await redis.zcard(OwnerKeys.build(ALICE).index) == 0


async def test_a_damaged_record_is_a_logged_absence(
    store: RedisConversationStore, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    info = await store.create(ALICE, title=None, system_prompt=None, limit=10)
    conversation = await loaded(store, ALICE, info.id)
    await store.write(ALICE, conversation, start=0, messages=turn("a", "b"))
    await redis.hdel(ConversationKeys.build(info.id).record, "m:1")  # lost in a failover
    with caplog.at_level(logging.WARNING, "chatstream"):
        assert await store.load(ALICE, info.id) is None
    assert "cannot be read whole" in caplog.text
    assert await store.delete(ALICE, info.id)  # and it can still be deleted


async def test_anonymous_conversations_expire_and_move_to_the_user_who_signs_in(
    store: RedisConversationStore, redis: Redis
) -> None:
    visitor = new_anonymous_owner()
    info = await store.create(visitor, title=None, system_prompt=None, limit=10)
    conversation = await loaded(store, visitor, info.id)
    await store.write(visitor, conversation, start=0, messages=turn("hello", "hi"))
    record = ConversationKeys.build(info.id).record
    assert 0 < await redis.pttl(record) <= 60_000
    assert 0 < await redis.pttl(OwnerKeys.build(visitor).index) <= 60_000
    assert await store.transfer(visitor, ALICE) == 1
    assert await store.load(visitor, info.id) is None
    moved = await loaded(store, ALICE, info.id)
    assert [m.content for m in moved.prompt.messages] == ["hello", "hi"]
    assert [c.id for c in (await store.page(ALICE, limit=10, before=None)).conversations] == [
        info.id
    ]
    assert (await store.page(visitor, limit=10, before=None)).conversations == []
    assert await redis.pttl(record) == -1  # a user's conversations do not expire


async def test_the_lease_is_one_reply_at_a_time(store: RedisConversationStore) -> None:
    lease = store.lease("c0ffee")
    token = await lease.acquire("m1", 10)
    assert token is not None
    assert await lease.acquire("m2", 10) is None
    assert await lease.running() == "m1"
    assert await lease.renew(token, 10)
    assert not await lease.renew("another", 10)
    await lease.release("another")
    assert await lease.running() == "m1"
    await lease.release(token)
    assert await lease.running() is None
    assert await lease.acquire("m2", 10) is not None


async def test_redis_errors_are_service_unavailable() -> None:
    unreachable = Redis(port=1, socket_connect_timeout=0.2)
    store = RedisConversationStore(unreachable)
    with pytest.raises(ServiceUnavailable):
        await store.create(ALICE, title=None, system_prompt=None, limit=10)
    with pytest.raises(ServiceUnavailable):
        await store.lease("c0ffee").running()
    await unreachable.aclose()


@pytest.mark.parametrize("error", OUTAGES, ids=error_id)
async def test_outages_are_service_unavailable(
    store: RedisConversationStore, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """What one server, a Sentinel's master or a cluster raises while away or failing over."""
    info = await store.create(ALICE, title=None, system_prompt=None, limit=10)
    conversation = await loaded(store, ALICE, info.id)
    Breakable(store.redis, monkeypatch).error = error
    lease = store.lease(info.id)
    calls = [
        store.create(ALICE, title=None, system_prompt=None, limit=10),
        store.page(ALICE, limit=10, before=None),
        store.load(ALICE, info.id),
        store.write(ALICE, conversation, start=0, messages=turn("a", "b")),
        store.rename(ALICE, info.id, "renamed"),
        store.set_feedback(ALICE, info.id, "a-a", {"like": True}),
        store.delete(ALICE, info.id),
        store.transfer(ALICE, BOB),
        lease.acquire("m1", 10),
        lease.renew("token", 10),
        lease.release("token"),
        lease.running(),
    ]
    for call in calls:
        with pytest.raises(ServiceUnavailable) as raised:
            await call
        assert raised.value.__cause__ is error
