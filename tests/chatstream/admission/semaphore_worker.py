"""One app instance in its own process, for the multi-process semaphore tests.

``python -m tests.chatstream.admission.semaphore_worker REDIS_URL MODE [options]``, from the
repository root; it prints ``position N`` while queued and ``granted`` once granted (one line
each, flushed), so the test can await those lines.

- ``hold``: acquire (as ``--client``, if given), then hold the permit until killed.
- ``queue``: acquire, push ``--id`` onto ``ORDER_KEY``, release, exit.
- ``hammer``: ``--tasks`` concurrent loops of ``--iterations`` acquire/release; while holding,
  each pushes the number of concurrent holders (an INCR/DECR counter) onto ``SAMPLES_KEY``.
"""

from __future__ import annotations

import argparse
import asyncio
import random

from redis.asyncio import Redis

from chatstream.admission.semaphore import RedisSemaphore

ORDER_KEY = "test:semaphore:order"
ACTIVE_KEY = "test:semaphore:active"
SAMPLES_KEY = "test:semaphore:samples"


def say(line: str) -> None:
    print(line, flush=True)


def report(position: int) -> None:
    if position:
        say(f"position {position}")


async def hammer(redis: Redis, semaphore: RedisSemaphore, iterations: int) -> None:
    for _ in range(iterations):
        async with semaphore.acquire():
            await redis.rpush(SAMPLES_KEY, await redis.incr(ACTIVE_KEY))
            await asyncio.sleep(random.uniform(0, 0.004))
            await redis.decr(ACTIVE_KEY)


async def main(options: argparse.Namespace) -> None:
    redis = Redis.from_url(options.url)
    semaphore = RedisSemaphore(
        redis,
        capacity=options.capacity,
        local_slots=options.local_slots,
        lease_ttl=options.lease_ttl,
        max_per_client=options.max_per_client,
    )
    try:
        if options.mode == "hammer":
            loops = (hammer(redis, semaphore, options.iterations) for _ in range(options.tasks))
            await asyncio.gather(*loops)
            return
        async with semaphore.acquire(client=options.client, on_position=report):
            say("granted")
            if options.mode == "hold":
                await asyncio.Event().wait()
            await redis.rpush(ORDER_KEY, options.id)
    finally:
        await semaphore.aclose()
        await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("mode", choices=["hold", "queue", "hammer"])
    parser.add_argument("--capacity", type=int, default=1)
    parser.add_argument("--local-slots", type=int)
    parser.add_argument("--lease-ttl", type=float, default=15.0)
    parser.add_argument("--client")
    parser.add_argument("--max-per-client", type=int)
    parser.add_argument("--id", default="")
    parser.add_argument("--tasks", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=1)
    asyncio.run(main(parser.parse_args()))
