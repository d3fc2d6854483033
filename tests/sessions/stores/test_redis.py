from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import fakeredis
import pytest
import redis as sync_redis
from redis import exceptions
from redis.asyncio import Redis

from sessions import RedisSessionStore, StoreUnavailable
from sessions.handle import new_session_id
from tests.redis_errors import OUTAGES, Breakable, error_id
from tests.servers import RedisProcess

from ..app import unused_port


async def test_unknown_ids_load_as_none(store: RedisSessionStore) -> None:
    assert await store.load(new_session_id()) is None


async def test_saved_fields_load_back_and_deleted_ones_vanish(store: RedisSessionStore) -> None:
    session_id = new_session_id()
    await store.save(session_id, {"a": "1", "b": '"two"', "": "[]"}, ())
    assert await store.load(session_id) == {"a": "1", "b": '"two"', "": "[]"}
    await store.save(session_id, {"c": "3"}, ["a", "never-there"])
    assert await store.load(session_id) == {"b": '"two"', "": "[]", "c": "3"}


async def test_a_session_without_fields_still_exists(store: RedisSessionStore) -> None:
    session_id = new_session_id()
    await store.save(session_id, {"a": "1"}, ["a"])
    assert await store.load(session_id) == {}


async def test_saving_without_create_never_brings_a_record_back(
    store: RedisSessionStore,
) -> None:
    session_id = new_session_id()
    await store.save(session_id, {"a": "1"}, (), create=False)
    assert await store.load(session_id) is None
    await store.save(session_id, {"a": "1"}, ())
    await store.delete(session_id)
    await store.save(session_id, {"b": "2"}, (), create=False)
    assert await store.load(session_id) is None


async def test_all_keys_of_a_session_share_one_cluster_slot(redis: Redis) -> None:
    store = RedisSessionStore(redis, prefix="app:")
    session_id = new_session_id()
    assert store.key(session_id) == f"app:session:{{{session_id}}}"
    assert store.key(session_id, "lock", "lease") == f"app:session:{{{session_id}}}:lock:lease"
    await store.save(session_id, {"a": "1"}, ())
    assert await redis.exists(store.key(session_id)) == 1


async def test_loading_slides_the_idle_timeout(redis: Redis) -> None:
    store = RedisSessionStore(redis, idle_timeout=100)
    session_id = new_session_id()
    await store.save(session_id, {"a": "1"}, ())
    await redis.pexpire(store.key(session_id), 1000)
    await store.load(session_id)
    assert 90_000 < await redis.pttl(store.key(session_id)) <= 100_000


async def test_the_ttl_never_outlives_the_absolute_lifetime(redis: Redis) -> None:
    store = RedisSessionStore(redis, idle_timeout=100, absolute_lifetime=10)
    session_id = new_session_id()
    await store.save(session_id, {"a": "1"}, ())
    assert 0 < await redis.pttl(store.key(session_id)) <= 10_000
    await store.load(session_id)
    assert 0 < await redis.pttl(store.key(session_id)) <= 10_000


async def test_a_record_past_its_lifetime_loads_as_none_and_is_deleted(
    store: RedisSessionStore, redis: Redis
) -> None:
    session_id = new_session_id()
    await store.save(session_id, {"a": "1"}, ())
    await redis.hset(store.key(session_id), "created", 0)
    assert await store.load(session_id) is None
    assert await redis.exists(store.key(session_id)) == 0


async def test_clients_that_decode_responses_work_too() -> None:
    store = RedisSessionStore(fakeredis.FakeAsyncRedis(decode_responses=True))
    session_id = new_session_id()
    await store.save(session_id, {"é": '"ü"'}, ())
    assert await store.load(session_id) == {"é": '"ü"'}


async def test_a_lock_has_one_holder_until_released(store: RedisSessionStore) -> None:
    session_id = new_session_id()
    token = await store.acquire_lock(session_id, "lease", ttl=10)
    assert token is not None
    assert await store.acquire_lock(session_id, "lease", ttl=10) is None
    assert await store.acquire_lock(session_id, "other", ttl=10) is not None
    assert not await store.renew_lock(session_id, "lease", "stolen", ttl=10)
    assert not await store.release_lock(session_id, "lease", "stolen")
    assert await store.renew_lock(session_id, "lease", token, ttl=10)
    assert await store.release_lock(session_id, "lease", token)
    assert not await store.release_lock(session_id, "lease", token)
    assert await store.acquire_lock(session_id, "lease", ttl=10) is not None


async def test_a_lock_expires_after_its_ttl(store: RedisSessionStore, redis: Redis) -> None:
    session_id = new_session_id()
    token = await store.acquire_lock(session_id, "lease", ttl=5)
    assert token is not None
    assert 0 < await redis.pttl(store.key(session_id, "lock", "lease")) <= 5000
    await store.renew_lock(session_id, "lease", token, ttl=50)
    assert 5000 < await redis.pttl(store.key(session_id, "lock", "lease")) <= 50_000


def every_call(store: RedisSessionStore) -> list[Coroutine[Any, Any, object]]:
    session_id = new_session_id()
    return [
        store.ping(),
        store.load(session_id),
        store.save(session_id, {"a": "1"}, ()),
        store.delete(session_id),
        store.acquire_lock(session_id, "lease", 1),
        store.renew_lock(session_id, "lease", "token", 1),
        store.release_lock(session_id, "lease", "token"),
    ]


async def test_an_unreachable_server_raises_store_unavailable(unreachable_redis: Redis) -> None:
    for call in every_call(RedisSessionStore(unreachable_redis)):
        with pytest.raises(StoreUnavailable) as caught:
            await call
        assert isinstance(caught.value.__cause__, exceptions.ConnectionError)
    await unreachable_redis.aclose()


@pytest.mark.parametrize(
    "error",
    [
        *OUTAGES,  # one server's, a Sentinel's and a cluster's, while away or failing over
        exceptions.ResponseError("MOVED 1 127.0.0.1:1"),
        exceptions.ResponseError("WRONGTYPE Operation against a key"),
        exceptions.OutOfMemoryError("OOM command not allowed"),
        exceptions.NoPermissionError("NOPERM"),
        exceptions.RedisError("anything else"),
        ConnectionResetError("reset by peer"),
        OSError("no route to host 127.0.0.1:1"),
    ],
    ids=error_id,
)
async def test_every_redis_error_is_translated_at_the_boundary(
    store: RedisSessionStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
) -> None:
    Breakable(store.redis, monkeypatch).error = error
    for call in every_call(store):
        with pytest.raises(StoreUnavailable) as caught:
            await call
        assert caught.value.__cause__ is error
        assert str(caught.value) == "session store unavailable"
    assert str(error) in caplog.text  # the detail is in the log, not in the error


def test_timeouts_must_be_positive(redis: Redis) -> None:
    with pytest.raises(ValueError, match="positive"):
        RedisSessionStore(redis, idle_timeout=0)


# -- against a real server: expiry in real time, Redis' own clock, concurrent writers --------


@pytest.mark.redis
async def test_an_idle_session_expires_and_activity_keeps_it_alive(real_redis: Redis) -> None:
    store = RedisSessionStore(real_redis, idle_timeout=0.5)
    session_id = new_session_id()
    await store.save(session_id, {"a": "1"}, ())
    for _ in range(3):
        await asyncio.sleep(0.25)
        assert await store.load(session_id) == {"a": "1"}
    await asyncio.sleep(0.6)
    assert await store.load(session_id) is None


@pytest.mark.redis
async def test_a_session_ends_at_its_absolute_lifetime_despite_activity(
    real_redis: Redis,
) -> None:
    store = RedisSessionStore(real_redis, idle_timeout=10, absolute_lifetime=0.6)
    session_id = new_session_id()
    await store.save(session_id, {"a": "1"}, ())
    await asyncio.sleep(0.3)
    assert await store.load(session_id) == {"a": "1"}
    await store.save(session_id, {"b": "2"}, (), create=False)
    await asyncio.sleep(0.4)
    assert await store.load(session_id) is None
    assert await real_redis.exists(store.key(session_id)) == 0


@pytest.mark.redis
async def test_expiry_follows_the_redis_clock_not_the_apps(
    real_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisSessionStore(real_redis, absolute_lifetime=60)
    session_id = new_session_id()
    monkeypatch.setattr(time, "time", lambda: 0.0)
    await store.save(session_id, {"a": "1"}, ())
    monkeypatch.setattr(time, "time", lambda: 10.0**10)
    assert await store.load(session_id) == {"a": "1"}


def read_only_replica(server: RedisProcess) -> None:
    """Make ``server`` a replica of a primary that does not exist, serving no stale data."""
    with sync_redis.Redis(port=server.port) as admin:
        admin.config_set("replica-serve-stale-data", "no")
        admin.replicaof("127.0.0.1", unused_port())


def out_of_memory(server: RedisProcess) -> None:
    """Make ``server`` refuse every write that needs memory."""
    with sync_redis.Redis(port=server.port) as admin:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", "1")


@pytest.mark.redis
@pytest.mark.parametrize("failure", [read_only_replica, out_of_memory])
async def test_a_server_that_answers_errors_raises_store_unavailable(
    private_redis: RedisProcess, failure: Callable[[RedisProcess], None]
) -> None:
    client = Redis.from_url(private_redis.url)
    store = RedisSessionStore(client)
    session_id = new_session_id()
    await store.save(session_id, {"a": "1"}, ())
    failure(private_redis)
    calls: list[Awaitable[object]] = [
        store.save(session_id, {"a": "2"}, ()),
        store.acquire_lock(session_id, "lease", 1),
    ]
    if failure is read_only_replica:
        calls += [store.load(session_id), store.ping()]
    for call in calls:
        with pytest.raises(StoreUnavailable) as caught:
            await call
        assert str(caught.value) == "session store unavailable"
        assert isinstance(caught.value.__cause__, exceptions.ResponseError)
    await client.aclose()


@pytest.mark.redis
async def test_concurrent_writers_of_different_fields_all_land(real_redis: Redis) -> None:
    stores = [RedisSessionStore(real_redis) for _ in range(2)]
    session_id = new_session_id()
    await stores[0].save(session_id, {"seed": "0"}, ())
    await asyncio.gather(
        *(
            stores[n % 2].save(session_id, {f"field{n}": str(n)}, (), create=False)
            for n in range(50)
        )
    )
    loaded = await stores[1].load(session_id)
    assert loaded == {"seed": "0", **{f"field{n}": str(n) for n in range(50)}}
