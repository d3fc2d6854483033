"""Every Redis error the semaphore and the rate limiter meet is a 503 ``store_unavailable`` with
a fixed message; the detail goes to the log."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ReadOnlyError, ResponseError

from chatstream.admission.rate_limit import RedisRateLimiter
from chatstream.admission.semaphore import RedisSemaphore
from chatstream.errors import ServiceUnavailable
from tests.redis_errors import OUTAGES, Breakable, error_id
from tests.servers import RedisProcess

ERRORS = [*OUTAGES, ResponseError("ERR unknown command")]
SEMAPHORE_DOWN = "the admission store is unavailable"
LIMITER_DOWN = "the rate limit store is unavailable"


@pytest.fixture
def breakable(embedded: Redis, monkeypatch: pytest.MonkeyPatch) -> Breakable:
    return Breakable(embedded, monkeypatch)


def assert_told_nothing_of(error: Exception, raised: ServiceUnavailable, message: str) -> None:
    assert (raised.status, raised.code, raised.message) == (503, "store_unavailable", message)
    assert raised.retry_after is not None
    assert raised.__cause__ is error


@pytest.mark.parametrize("error", ERRORS, ids=error_id)
async def test_acquire_and_load_are_unavailable(
    breakable: Breakable, error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    semaphore = RedisSemaphore(breakable.redis, capacity=1)
    breakable.error = error
    with pytest.raises(ServiceUnavailable) as raised:
        async with semaphore.acquire(client="alice"):
            pytest.fail("granted without a store")
    assert_told_nothing_of(error, raised.value, SEMAPHORE_DOWN)
    with pytest.raises(ServiceUnavailable) as raised:
        await semaphore.load()
    assert_told_nothing_of(error, raised.value, SEMAPHORE_DOWN)
    assert repr(error) in caplog.text
    await semaphore.aclose()


@pytest.mark.parametrize("error", ERRORS, ids=error_id)
async def test_waiters_fail_as_unavailable(breakable: Breakable, error: Exception) -> None:
    semaphore = RedisSemaphore(breakable.redis, capacity=1)
    queued = asyncio.Event()

    async def wait() -> None:
        async with semaphore.acquire(on_position=lambda position: queued.set()):
            pytest.fail("granted without a store")

    async with semaphore.acquire():
        waiter = asyncio.create_task(wait())
        await queued.wait()
        breakable.error = error
        with pytest.raises(ServiceUnavailable) as raised:
            await waiter
        assert_told_nothing_of(error, raised.value, SEMAPHORE_DOWN)
        breakable.error = None
    await semaphore.aclose()


@pytest.mark.parametrize("error", ERRORS, ids=error_id)
async def test_the_rate_limit_is_unavailable(
    breakable: Breakable, error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RedisRateLimiter(breakable.redis)
    breakable.error = error
    with pytest.raises(ServiceUnavailable) as raised:
        await limiter.hit("alice")
    assert_told_nothing_of(error, raised.value, LIMITER_DOWN)
    assert repr(error) in caplog.text


async def test_a_read_only_replica_is_unavailable(private_redis: RedisProcess) -> None:
    """A node turned replica (a failover): every write is refused with ``READONLY``."""
    redis = Redis(port=private_redis.port)
    await redis.replicaof("127.0.0.1", "1")  # a master that never answers
    semaphore = RedisSemaphore(redis, capacity=1)
    with pytest.raises(ServiceUnavailable, match=SEMAPHORE_DOWN) as raised:
        async with semaphore.acquire(client="alice"):
            pytest.fail("granted by a replica")
    assert isinstance(raised.value.__cause__, ReadOnlyError)
    with pytest.raises(ServiceUnavailable, match=LIMITER_DOWN):
        await RedisRateLimiter(redis).hit("alice")
    await semaphore.aclose()
    await redis.aclose()
