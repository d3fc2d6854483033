"""RedisRateLimiter on the embedded store and on real Redis: a client's turns per minute."""

from __future__ import annotations

import math

import pytest
from redis.asyncio import Redis

from chatstream.admission.rate_limit import WINDOW, RedisRateLimiter
from chatstream.errors import ServiceUnavailable, TooManyRequests
from chatstream.keys import rate_limit_key

CLIENT = "203.0.113.7"


async def redis_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_a_client_starts_at_most_per_minute_turns(store: Redis) -> None:
    limiter = RedisRateLimiter(store, per_minute=3)
    for _ in range(3):
        await limiter.hit(CLIENT)
    with pytest.raises(TooManyRequests) as raised:
        await limiter.hit(CLIENT)
    refusal = raised.value
    assert (refusal.status, refusal.code) == (429, "too_many_requests")
    assert refusal.message == "at most 3 turns per minute"
    assert refusal.retry_after is not None
    assert 0 < refusal.retry_after <= WINDOW
    await limiter.hit("198.51.100.2")  # another client is not affected
    # A refused turn does not count, and the client's record expires a window after its last turn.
    key = rate_limit_key(CLIENT)
    assert await store.zcard(key) == 3
    assert 0 < await store.pttl(key) <= WINDOW * 1000


async def test_the_window_slides_by_redis_time(store: Redis) -> None:
    limiter = RedisRateLimiter(store, per_minute=2)
    key = rate_limit_key(CLIENT)
    window, half = round(WINDOW * 1000), round(WINDOW * 500)
    before = await redis_ms(store)
    # One turn started exactly a window ago (no longer counted), one half a window ago.
    await store.zadd(key, {"a window ago": before - window, "half a window ago": before - half})
    await limiter.hit(CLIENT)
    with pytest.raises(TooManyRequests) as raised:
        await limiter.hit(CLIENT)
    after = await redis_ms(store)
    assert await store.zscore(key, "a window ago") is None
    # Retry-After: until the turn of half a window ago leaves the window, rounded up.
    leaves = before - half + window
    earliest, latest = (math.ceil((leaves - now) / 1000) for now in (after, before))
    assert earliest <= (raised.value.retry_after or 0) <= latest
    # Once it has left, the client may start one again.
    await store.zadd(key, {"half a window ago": before - window})
    await limiter.hit(CLIENT)


async def test_instances_share_the_limit(store: Redis) -> None:
    one, two = RedisRateLimiter(store, per_minute=2), RedisRateLimiter(store, per_minute=2)
    await one.hit(CLIENT)
    await two.hit(CLIENT)
    with pytest.raises(TooManyRequests):
        await one.hit(CLIENT)
    with pytest.raises(TooManyRequests):
        await two.hit(CLIENT)


async def test_zero_turns_off_the_limit_without_calling_redis() -> None:
    nowhere = Redis(port=1)  # nothing listens there: any call would fail
    limiter = RedisRateLimiter(nowhere, per_minute=0)
    for _ in range(100):
        await limiter.hit(CLIENT)
    await nowhere.aclose()


async def test_each_client_has_a_key_and_a_hash_tag_of_its_own(store: Redis) -> None:
    limiter = RedisRateLimiter(store, per_minute=1)
    clients = (CLIENT, "alice")
    for client in clients:
        await limiter.hit(client)
    keys = [rate_limit_key(client) for client in clients]
    assert await store.exists(*keys) == await store.dbsize() == 2
    assert not any(client in key for client in clients for key in keys)  # digests, not the ids
    assert len({key.split("{", 1)[1].split("}", 1)[0] for key in keys}) == 2


async def test_a_redis_error_is_service_unavailable(store: Redis) -> None:
    await store.set(rate_limit_key(CLIENT), "not a sorted set")  # WRONGTYPE
    with pytest.raises(ServiceUnavailable) as raised:
        await RedisRateLimiter(store).hit(CLIENT)
    assert (raised.value.status, raised.value.code) == (503, "store_unavailable")
    assert raised.value.message == "the rate limit store is unavailable"


def test_a_negative_limit_is_refused(embedded: Redis) -> None:
    with pytest.raises(ValueError):
        RedisRateLimiter(embedded, per_minute=-1)
