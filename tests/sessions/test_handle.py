from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from typing import Any

import pytest
from redis.asyncio import Redis

from sessions import RedisSessionStore, SerializationError, Session, dumps

from .test_serializer import Basket


class RecordingStore(RedisSessionStore):
    """Remembers what each save was asked to write."""

    saves: list[tuple[dict[str, str], list[str]]]

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis)
        self.saves = []

    async def save(
        self,
        session_id: str,
        changed: Mapping[str, str],
        deleted: Collection[str],
        *,
        create: bool = True,
    ) -> None:
        self.saves.append((dict(changed), list(deleted)))
        await super().save(session_id, changed, deleted, create=create)


@pytest.fixture
def recording(redis: Redis) -> RecordingStore:
    return RecordingStore(redis)


async def saved(values: dict[str, Any], store: RedisSessionStore) -> Session:
    """A handle loaded from a record holding ``values``."""
    creator = Session(store)
    creator.get_session().update(values)
    await creator.save_session()
    session_id = creator.get_session_id()
    return Session(store, session_id, await store.load(session_id))


async def test_a_new_session_is_saved_and_loads_back(store: RedisSessionStore) -> None:
    session = Session(store)
    assert session.is_new and not session.has_data
    session.get_session()["basket"] = Basket(["pear"])
    await session.save_session()
    loaded = Session(store, session.get_session_id(), await store.load(session.get_session_id()))
    assert not loaded.is_new
    assert loaded.get_session() == {"basket": Basket(["pear"])}


async def test_only_changed_and_deleted_keys_are_written(recording: RecordingStore) -> None:
    session = await saved({"keep": 1, "change": 2, "drop": 3}, recording)
    recording.saves.clear()
    data = session.get_session()
    assert data["keep"] == 1
    data["change"] = 20
    del data["drop"]
    await session.save_session()
    assert recording.saves == [({"change": "20"}, ["drop"])]


async def test_nothing_is_written_when_nothing_changed(recording: RecordingStore) -> None:
    session = await saved({"a": [1]}, recording)
    recording.saves.clear()
    session.get_session()["a"] = [1]
    await session.save_session()
    assert recording.saves == []


@pytest.mark.parametrize(
    ("value", "mutate"),
    [
        ({"nested": {"list": [1]}}, lambda value: value["nested"]["list"].append(2)),
        (Basket(["apple"]), lambda value: value.items.append("pear")),
    ],
    ids=["nested dict", "registered object"],
)
async def test_in_place_mutations_are_detected(
    store: RedisSessionStore, value: Any, mutate: Any
) -> None:
    session = await saved({"value": value}, store)
    mutate(session.get_session()["value"])
    expected = dumps(session.get_session()["value"])
    await session.save_session()
    assert await store.load(session.get_session_id()) == {"value": expected}


async def test_values_are_decoded_only_when_read(
    store: RedisSessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    session = await saved({"good": 1}, store)
    await store.save(session.get_session_id(), {"broken": "{not json"}, ())
    session = Session(store, session.get_session_id(), await store.load(session.get_session_id()))
    data = session.get_session()
    assert data["good"] == 1
    data["new"] = True
    await session.save_session()
    assert "broken" not in caplog.text
    assert data.get("broken") is None
    assert "'broken' cannot be read" in caplog.text


async def test_keys_are_strings(store: RedisSessionStore) -> None:
    with pytest.raises(TypeError, match="strings"):
        Session(store).get_session()[1] = "one"  # type: ignore[index]


async def test_unserializable_values_fail_the_save(store: RedisSessionStore) -> None:
    session = Session(store)
    session.get_session()["bad"] = object()
    with pytest.raises(SerializationError):
        await session.save_session()


async def test_clear_deletes_the_record_and_starts_over(store: RedisSessionStore) -> None:
    session = await saved({"a": 1}, store)
    data = session.get_session()
    old_id = session.get_session_id()
    await session.clear_session()
    assert data == {}
    assert not session.has_data
    assert await store.load(old_id) is None
    data["b"] = 2
    assert session.has_data
    await session.save_session()
    assert session.get_session_id() != old_id
    assert await store.load(session.get_session_id()) == {"b": "2"}
    assert await store.load(old_id) is None


async def test_rotate_moves_all_data_to_a_new_id(store: RedisSessionStore) -> None:
    session = await saved({"read": [1], "unread": {"x": "y"}}, store)
    old_id = session.get_session_id()
    session.get_session()["read"].append(2)
    await session.rotate()
    assert session.get_session_id() != old_id
    assert await store.load(old_id) is None
    assert await store.load(session.get_session_id()) == {"read": "[1,2]", "unread": '{"x":"y"}'}
    session.get_session()["after"] = 1
    await session.save_session()
    assert await store.load(session.get_session_id()) == {
        "read": "[1,2]",
        "unread": '{"x":"y"}',
        "after": "1",
    }


async def test_a_session_ended_by_another_request_is_not_brought_back(
    store: RedisSessionStore,
) -> None:
    session = await saved({"a": 1}, store)
    other = Session(store, session.get_session_id(), await store.load(session.get_session_id()))
    await other.rotate()
    session.get_session()["a"] = 2
    await session.save_session()
    assert await store.load(session.get_session_id()) is None
    assert await store.load(other.get_session_id()) == {"a": "1"}


async def test_a_new_session_creates_its_record_only_once(store: RedisSessionStore) -> None:
    session = Session(store)
    session.get_session()["a"] = 1
    await session.save_session()
    await store.delete(session.get_session_id())
    session.get_session()["a"] = 2
    await session.save_session()
    assert await store.load(session.get_session_id()) is None


async def test_locks_belong_to_the_session_id(store: RedisSessionStore) -> None:
    session = await saved({"a": 1}, store)
    same = Session(store, session.get_session_id(), {})
    token = await session.acquire_lock("lease", ttl=10)
    assert token is not None
    assert await same.acquire_lock("lease", ttl=10) is None
    assert await Session(store).acquire_lock("lease", ttl=10) is not None
    assert await same.renew_lock("lease", token, ttl=10)
    assert await same.release_lock("lease", token)


@pytest.mark.redis
async def test_concurrent_handles_changing_different_keys_lose_nothing(
    real_redis: Redis,
) -> None:
    store = RedisSessionStore(real_redis)
    first = await saved({"a": 0, "b": 0}, store)
    second = Session(store, first.get_session_id(), await store.load(first.get_session_id()))
    first.get_session()["a"] = 1
    second.get_session()["b"] = 2
    await asyncio.gather(first.save_session(), second.save_session())
    assert await store.load(first.get_session_id()) == {"a": "1", "b": "2"}
