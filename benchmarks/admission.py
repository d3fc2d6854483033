"""Admission latency: RedisSemaphore next to redis-py's asyncio ``Lock`` on the same Redis.

    python benchmarks/admission.py        # REDIS_URL, else redis://127.0.0.1:6379/15

Measures, per operation, the uncontended ``acquire`` + release round and the hand-off: the time
from a holder starting its release to the next waiter holding the permit. The semaphore is
measured as the served app uses it, each request of a client (its cap counted), and without one.
redis-py's ``Lock`` waits by polling every ``sleep`` seconds, so it is measured with its default
(0.1 s) and with 1 ms polling. Then one ``RedisRateLimiter.hit``. Targets: acquire + release
<= 1 ms p50 on loopback; hand-off <= 5 ms p99.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from chatstream.admission.rate_limit import RedisRateLimiter
from chatstream.admission.semaphore import RedisSemaphore
from chatstream.keys import SemaphoreKeys, rate_limit_key

ROUNDS = 2000
HAND_OFFS = 200
NAME = "benchmark"
LOCK_KEY = "chatstream:benchmark:lock"
CLIENT = "203.0.113.7"


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49] * 1000, cuts[98] * 1000


async def timed(rounds: int, operation: Callable[[], Awaitable[float]]) -> list[float]:
    for _ in range(rounds // 10):  # warm-up: connections, script cache
        await operation()
    return [await operation() for _ in range(rounds)]


async def semaphore_round(semaphore: RedisSemaphore, client: str | None) -> float:
    start = time.perf_counter()
    async with semaphore.acquire(client=client):
        pass
    return time.perf_counter() - start


async def semaphore_hand_off(semaphore: RedisSemaphore, client: str | None) -> float:
    queued = asyncio.Event()
    granted = 0.0

    async def wait() -> None:
        nonlocal granted
        async with semaphore.acquire(client=client, on_position=lambda position: queued.set()):
            granted = time.perf_counter()

    async with semaphore.acquire(client=client):
        waiter = asyncio.create_task(wait())
        await queued.wait()
        released = time.perf_counter()
    await waiter
    return granted - released


async def rate_limit_hit(limiter: RedisRateLimiter) -> float:
    start = time.perf_counter()
    await limiter.hit(CLIENT)
    return time.perf_counter() - start


async def lock_round(redis: Redis, sleep: float) -> float:
    start = time.perf_counter()
    async with redis.lock(LOCK_KEY, timeout=15, sleep=sleep):
        pass
    return time.perf_counter() - start


async def lock_hand_off(redis: Redis, sleep: float) -> float:
    granted = 0.0

    async def wait() -> None:
        nonlocal granted
        async with redis.lock(LOCK_KEY, timeout=15, sleep=sleep):
            granted = time.perf_counter()

    async with redis.lock(LOCK_KEY, timeout=15, sleep=sleep):
        waiter = asyncio.create_task(wait())
        await asyncio.sleep(0.005)  # the waiter is polling by now; a Lock gives no signal
        released = time.perf_counter()
    await waiter
    return granted - released


async def main() -> None:
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"
    redis = Redis.from_url(url)
    semaphore = RedisSemaphore(redis, name=NAME, capacity=1)
    columns = {
        "RedisSemaphore": (
            await timed(ROUNDS, lambda: semaphore_round(semaphore, CLIENT)),
            await timed(HAND_OFFS, lambda: semaphore_hand_off(semaphore, CLIENT)),
        ),
        "no client": (
            await timed(ROUNDS, lambda: semaphore_round(semaphore, None)),
            await timed(HAND_OFFS, lambda: semaphore_hand_off(semaphore, None)),
        ),
        "Lock, poll 100ms": (
            await timed(ROUNDS, lambda: lock_round(redis, 0.1)),
            await timed(HAND_OFFS // 4, lambda: lock_hand_off(redis, 0.1)),
        ),
        "Lock, poll 1ms": (
            await timed(ROUNDS, lambda: lock_round(redis, 0.001)),
            await timed(HAND_OFFS, lambda: lock_hand_off(redis, 0.001)),
        ),
    }
    limiter = RedisRateLimiter(redis, per_minute=10 * ROUNDS)
    hits = await timed(ROUNDS, lambda: rate_limit_hit(limiter))
    await semaphore.aclose()
    await redis.delete(SemaphoreKeys.build(NAME).tickets, rate_limit_key(CLIENT))
    await redis.aclose()

    print(f"admission latency in ms (Redis {url}, Python {platform.python_version()})")
    baselines = [name for name in columns if name.startswith("Lock")]
    header = "".join(f"{name:>19}" for name in columns)
    ratio_header = "".join(f"{'ours / ' + name.split(', ')[1]:>19}" for name in baselines)
    print(f"{'':<24}{header}{ratio_header}")
    for label, index in (("acquire + release", 0), ("hand-off", 1)):
        for cut, name in enumerate(("p50", "p99")):
            values = {key: percentiles(samples[index])[cut] for key, samples in columns.items()}
            ours = values["RedisSemaphore"]
            cells = "".join(f"{value:>19.3f}" for value in values.values())
            ratios = "".join(f"{ours / values[baseline]:>19.3g}" for baseline in baselines)
            print(f"{label + ' ' + name:<24}{cells}{ratios}")
    print("rate limit hit p50 {:.3f}, p99 {:.3f}".format(*percentiles(hits)))


if __name__ == "__main__":
    asyncio.run(main())
