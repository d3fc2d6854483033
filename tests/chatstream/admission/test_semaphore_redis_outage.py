"""RedisSemaphore when its Redis goes away: a private redis-server, stopped and restarted
(a restart loses every key)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from chatstream.admission.base import Load
from chatstream.admission.semaphore import RedisSemaphore
from chatstream.errors import ServiceUnavailable
from chatstream.keys import SemaphoreKeys
from tests.servers import RedisProcess


async def hand_off(semaphore: RedisSemaphore) -> None:
    """A permit passes from a holder to a waiter, through the wake-up signal or the re-check."""
    queued = asyncio.Event()

    async def wait() -> None:
        async with semaphore.acquire(on_position=lambda position: queued.set()):
            pass

    async with semaphore.acquire():
        waiter = asyncio.create_task(wait())
        await queued.wait()
    await waiter


async def wake_subscribers(redis: Redis) -> int:
    ((_, count),) = await redis.pubsub_numsub(SemaphoreKeys.build("generation").wake_channel)
    return int(count)


async def test_works_again_after_redis_restarts(private_redis: RedisProcess) -> None:
    redis = Redis(port=private_redis.port)
    semaphore = RedisSemaphore(redis, capacity=1)
    await hand_off(semaphore)
    assert await wake_subscribers(redis) == 1
    await asyncio.to_thread(private_redis.restart)
    async with semaphore.acquire():
        assert await semaphore.load() == Load(1, 0, 1, 64)
    await hand_off(semaphore)
    assert await semaphore.load() == Load(0, 0, 1, 64)
    # The wake-up listener subscribes again by itself, within redis-py's retry back-off; the
    # subscription lives in Redis, so there is no event to await.
    async with asyncio.timeout(30):
        while not await wake_subscribers(redis):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    await semaphore.aclose()
    await redis.aclose()


async def test_a_lease_that_cannot_be_renewed_is_lost(private_redis: RedisProcess) -> None:
    redis = Redis(port=private_redis.port)
    semaphore = RedisSemaphore(redis, capacity=1, lease_ttl=0.6)
    async with semaphore.acquire() as permit:
        await asyncio.to_thread(private_redis.stop)
        await asyncio.wait_for(permit.lost.wait(), 10)
        await asyncio.to_thread(private_redis.start)
    await semaphore.aclose()
    await redis.aclose()


async def test_acquire_fails_with_service_unavailable(private_redis: RedisProcess) -> None:
    redis = Redis(port=private_redis.port, retry=Retry(NoBackoff(), 1))
    semaphore = RedisSemaphore(redis, capacity=1)
    await asyncio.to_thread(private_redis.stop)
    with pytest.raises(ServiceUnavailable) as raised:
        async with semaphore.acquire():
            pytest.fail("granted without Redis")
    assert raised.value.status == 503
    assert raised.value.code == "store_unavailable"
    with pytest.raises(ServiceUnavailable):
        await semaphore.load()
    await asyncio.to_thread(private_redis.start)
    await semaphore.aclose()
    await redis.aclose()


async def test_waiters_fail_with_service_unavailable(private_redis: RedisProcess) -> None:
    redis = Redis(port=private_redis.port, retry=Retry(NoBackoff(), 1))
    semaphore = RedisSemaphore(redis, capacity=1)
    queued = asyncio.Event()

    async def wait() -> None:
        async with semaphore.acquire(on_position=lambda position: queued.set()):
            pytest.fail("granted without Redis")

    async with semaphore.acquire():
        waiter = asyncio.create_task(wait())
        await queued.wait()
        await asyncio.to_thread(private_redis.stop)
        with pytest.raises(ServiceUnavailable):
            await waiter
        await asyncio.to_thread(private_redis.start)
    await semaphore.aclose()
    await redis.aclose()


async def test_the_wake_up_listener_recovers_from_any_error(
    private_redis: RedisProcess, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not only Redis errors: a bug or a library's surprise in the listener must not leave the
    queue without its wake-ups for good."""
    redis = Redis(port=private_redis.port)
    semaphore = RedisSemaphore(redis, capacity=1)
    await hand_off(semaphore)  # the listener runs
    failures: list[int] = []
    get_message = PubSub.get_message

    async def broken_once(self: PubSub, *args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append(1)
            raise RuntimeError("a surprise")
        return await get_message(self, *args, **kwargs)

    first = semaphore._pubsub
    monkeypatch.setattr(PubSub, "get_message", broken_once)
    async with asyncio.timeout(10):  # the listener drops its broken subscription, makes anew
        while semaphore._pubsub in (None, first) or not semaphore._pubsub.subscribed:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert failures
    assert "RuntimeError('a surprise')" in caplog.text
    assert await wake_subscribers(redis) == 1
    await hand_off(semaphore)
    await semaphore.aclose()
    await redis.aclose()
