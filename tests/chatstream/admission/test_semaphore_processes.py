"""RedisSemaphore shared by OS processes on one real Redis: capacity, order, a client's cap,
crashed instances."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from chatstream.admission.base import Load
from chatstream.admission.semaphore import RECHECK_INTERVAL, WAITER_TTL, RedisSemaphore
from chatstream.errors import TooManyRequests
from chatstream.keys import SemaphoreKeys

ROOT = Path(__file__).parents[3]
# Run as a module from the repository root, so the worker imports this tree's chatstream.
WORKER = "tests.chatstream.admission.semaphore_worker"
ORDER_KEY = "test:semaphore:order"
SAMPLES_KEY = "test:semaphore:samples"
KEYS = SemaphoreKeys.build("generation")
ALICE = ("--client", "alice", "--max-per-client", "2")

Spawn = Callable[..., Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
async def spawn(redis_url: str) -> AsyncIterator[Spawn]:
    processes: list[asyncio.subprocess.Process] = []

    async def start(mode: str, *options: str) -> asyncio.subprocess.Process:
        command = [sys.executable, "-m", WORKER, redis_url, mode, *options]
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, cwd=ROOT
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    return (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()


def kill(process: asyncio.subprocess.Process) -> float:
    """``kill -9``; returns when, on the event loop's clock."""
    process.send_signal(signal.SIGKILL)
    return asyncio.get_running_loop().time()


async def test_processes_never_exceed_capacity(real_redis: Redis, spawn: Spawn) -> None:
    options = ("--capacity", "3", "--local-slots", "2", "--tasks", "3", "--iterations", "15")
    workers = [await spawn("hammer", *options) for _ in range(4)]
    for worker in workers:
        assert await worker.wait() == 0
    samples = [int(sample) for sample in await real_redis.lrange(SAMPLES_KEY, 0, -1)]
    assert len(samples) == 4 * 3 * 15
    assert max(samples) <= 3
    semaphore = RedisSemaphore(real_redis, capacity=3)
    assert await semaphore.load() == Load(0, 0, 3, 64)


async def test_grants_across_processes_follow_ticket_order(real_redis: Redis, spawn: Spawn) -> None:
    semaphore = RedisSemaphore(real_redis, capacity=1)
    ids = ["a", "b", "c", "d"]
    async with semaphore.acquire():
        workers = []
        for position, worker_id in enumerate(ids, 1):
            workers.append(await spawn("queue", "--id", worker_id))
            assert await line(workers[-1]) == f"position {position}"
    for worker in workers:
        assert await worker.wait() == 0
    assert await real_redis.lrange(ORDER_KEY, 0, -1) == [worker_id.encode() for worker_id in ids]
    await semaphore.aclose()


async def test_a_killed_holders_permit_is_granted_within_its_lease(
    real_redis: Redis, spawn: Spawn
) -> None:
    lease_ttl = 1.5
    holder = await spawn("hold", "--lease-ttl", str(lease_ttl))
    assert await line(holder) == "granted"
    semaphore = RedisSemaphore(real_redis, capacity=1, lease_ttl=lease_ttl)
    queued = asyncio.Event()

    async def wait_for_permit() -> float:
        async with semaphore.acquire(on_position=lambda position: queued.set()):
            return asyncio.get_running_loop().time()

    waiter = asyncio.create_task(wait_for_permit())
    await queued.wait()
    killed = kill(holder)
    granted = await waiter
    assert granted - killed <= lease_ttl + lease_ttl / 3
    await semaphore.aclose()


async def test_a_killed_waiter_leaves_the_queue(real_redis: Redis, spawn: Spawn) -> None:
    semaphore = RedisSemaphore(real_redis, capacity=1)
    positions: list[int] = []
    reached: defaultdict[int, asyncio.Event] = defaultdict(asyncio.Event)

    def report(position: int) -> None:
        positions.append(position)
        reached[position].set()

    async def wait_for_permit() -> None:
        async with semaphore.acquire(on_position=report):
            pass

    async with semaphore.acquire():
        doomed = await spawn("queue", "--id", "doomed")
        assert await line(doomed) == "position 1"
        waiter = asyncio.create_task(wait_for_permit())
        await reached[2].wait()
        killed = kill(doomed)
        await reached[1].wait()
        assert asyncio.get_running_loop().time() - killed <= WAITER_TTL + RECHECK_INTERVAL
    await waiter
    assert positions == [2, 1, 0]
    assert await semaphore.load() == Load(0, 0, 1, 64)
    await semaphore.aclose()


async def assert_refused(semaphore: RedisSemaphore, client: str) -> None:
    with pytest.raises(TooManyRequests):
        async with semaphore.acquire(client=client):
            pytest.fail(f"{client} got past its cap")


async def queue_and_leave(semaphore: RedisSemaphore, client: str) -> int:
    """Queue a request of ``client``, then cancel it; returns the position it was given."""
    positions: list[int] = []
    queued = asyncio.Event()

    def report(position: int) -> None:
        positions.append(position)
        queued.set()

    async def wait_for_permit() -> None:
        async with semaphore.acquire(client=client, on_position=report):
            pytest.fail("granted while the permit is held")

    waiting = asyncio.create_task(wait_for_permit())
    await queued.wait()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    return positions[0]


async def test_processes_share_a_clients_cap(real_redis: Redis, spawn: Spawn) -> None:
    holder = await spawn("hold", *ALICE)
    assert await line(holder) == "granted"
    waiter = await spawn("hold", *ALICE)
    assert await line(waiter) == "position 1"
    semaphore = RedisSemaphore(real_redis, capacity=1, max_per_client=2)
    await assert_refused(semaphore, "alice")
    assert await queue_and_leave(semaphore, "bob") == 2
    await semaphore.aclose()


async def test_a_killed_instances_tickets_stop_counting_for_their_client(
    real_redis: Redis, spawn: Spawn
) -> None:
    lease_ttl = ("--lease-ttl", "1")
    holder = await spawn("hold", *ALICE, *lease_ttl)
    assert await line(holder) == "granted"
    waiter = await spawn("hold", *ALICE, *lease_ttl)
    assert await line(waiter) == "position 1"
    semaphore = RedisSemaphore(real_redis, capacity=1, max_per_client=2, lease_ttl=1)
    await assert_refused(semaphore, "alice")
    kill(holder)
    kill(waiter)
    # Their lease and heartbeat run out in Redis; the next script (here load) drops them.
    async with asyncio.timeout(30):
        while await semaphore.load() != Load(0, 0, 1, 64):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    assert await real_redis.hlen(KEYS.client_tickets) == await real_redis.hlen(KEYS.ticket_clients)
    assert await real_redis.hlen(KEYS.client_tickets) == 0
    async with semaphore.acquire(client="alice"):
        assert await queue_and_leave(semaphore, "alice") == 1
    await semaphore.aclose()
