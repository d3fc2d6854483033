"""RedisSemaphore when its Redis goes away: a private redis-server, stopped and restarted."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from chatstream.admission.base import Load
from chatstream.admission.semaphore import RedisSemaphore
from chatstream.errors import ServiceUnavailable
from chatstream.keys import SemaphoreKeys
from chatstream.testing import free_port


class RedisServer:
    """A redis-server of this test's own, without persistence: a restart loses every key."""

    def __init__(self) -> None:
        self.port = free_port()
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no"),
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._process.stdout is not None
        async with asyncio.timeout(10):
            while b"Ready to accept connections" not in await self._process.stdout.readline():
                pass

    async def stop(self) -> None:
        assert self._process is not None
        self._process.terminate()
        await self._process.wait()

    async def restart(self) -> None:
        await self.stop()
        await self.start()


@pytest.fixture
async def server() -> AsyncIterator[RedisServer]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("these tests need redis-server on PATH")
        pytest.skip("these tests need redis-server on PATH")
    server = RedisServer()
    await server.start()
    yield server
    await server.stop()


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


async def test_works_again_after_redis_restarts(server: RedisServer) -> None:
    redis = Redis(port=server.port)
    semaphore = RedisSemaphore(redis, capacity=1)
    await hand_off(semaphore)
    assert await wake_subscribers(redis) == 1
    await server.restart()
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


async def test_a_lease_that_cannot_be_renewed_is_lost(server: RedisServer) -> None:
    redis = Redis(port=server.port)
    semaphore = RedisSemaphore(redis, capacity=1, lease_ttl=0.6)
    async with semaphore.acquire() as permit:
        await server.stop()
        await asyncio.wait_for(permit.lost.wait(), 10)
        await server.start()
    await semaphore.aclose()
    await redis.aclose()


async def test_acquire_fails_with_service_unavailable(server: RedisServer) -> None:
    redis = Redis(port=server.port, retry=Retry(NoBackoff(), 1))
    semaphore = RedisSemaphore(redis, capacity=1)
    await server.stop()
    with pytest.raises(ServiceUnavailable) as raised:
        async with semaphore.acquire():
            pytest.fail("granted without Redis")
    assert raised.value.status == 503
    assert raised.value.code == "store_unavailable"
    with pytest.raises(ServiceUnavailable):
        await semaphore.load()
    await server.start()
    await semaphore.aclose()
    await redis.aclose()


async def test_waiters_fail_with_service_unavailable(server: RedisServer) -> None:
    redis = Redis(port=server.port, retry=Retry(NoBackoff(), 1))
    semaphore = RedisSemaphore(redis, capacity=1)
    queued = asyncio.Event()

    async def wait() -> None:
        async with semaphore.acquire(on_position=lambda position: queued.set()):
            pytest.fail("granted without Redis")

    async with semaphore.acquire():
        waiter = asyncio.create_task(wait())
        await queued.wait()
        await server.stop()
        with pytest.raises(ServiceUnavailable):
            await waiter
        await server.start()
    await semaphore.aclose()
    await redis.aclose()
