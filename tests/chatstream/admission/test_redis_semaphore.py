"""RedisSemaphore on the embedded store and on real Redis: the behaviour one instance sees."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from chatstream.admission.base import Admission, Load, Permit
from chatstream.admission.semaphore import RedisSemaphore
from chatstream.errors import QueueFull, QueueTimeout, ServiceUnavailable
from chatstream.keys import SemaphoreKeys
from sessions.embedded import embedded_redis

KEYS = SemaphoreKeys.build("generation")

MakeSemaphore = Callable[..., RedisSemaphore]


@pytest.fixture
async def embedded() -> AsyncIterator[Redis]:
    client = embedded_redis()
    yield client
    await client.aclose()


@pytest.fixture(params=["embedded", "real"])
def store(request: pytest.FixtureRequest) -> Redis:
    client: Redis = request.getfixturevalue("real_redis" if request.param == "real" else "embedded")
    return client


@pytest.fixture
async def make_semaphore(store: Redis) -> AsyncIterator[MakeSemaphore]:
    made: list[RedisSemaphore] = []

    def make(**options: Any) -> RedisSemaphore:
        made.append(RedisSemaphore(store, **{"capacity": 1, **options}))
        return made[-1]

    yield make
    for semaphore in made:
        await semaphore.aclose()


class Request:
    """One request in its own task: records its positions and holds its permit until released,
    or, given ``grants``, appends itself there once granted and releases at once."""

    def __init__(self, semaphore: RedisSemaphore, grants: list[Request] | None = None) -> None:
        self.positions: list[int] = []
        self.granted = asyncio.Event()
        self._grants = grants
        self._seen: defaultdict[int, asyncio.Event] = defaultdict(asyncio.Event)
        self._release = asyncio.Event()
        if grants is not None:
            self._release.set()
        self.task = asyncio.create_task(self._run(semaphore))

    async def _run(self, semaphore: RedisSemaphore) -> None:
        async with semaphore.acquire(on_position=self._report):
            if self._grants is not None:
                self._grants.append(self)
            self.granted.set()
            await self._release.wait()

    def _report(self, position: int) -> None:
        self.positions.append(position)
        self._seen[position].set()

    async def reached(self, position: int) -> None:
        waiting = asyncio.ensure_future(self._seen[position].wait())
        await asyncio.wait([waiting, self.task], return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            waiting.cancel()
            await self.task  # raises what ended the request
            pytest.fail(f"the request ended before reaching position {position}")

    async def release(self) -> None:
        self._release.set()
        await self.task


async def queued(semaphore: RedisSemaphore, count: int, **kwargs: Any) -> list[Request]:
    """``count`` requests, queued one after the other (so their ticket order is known)."""
    requests: list[Request] = []
    for _ in range(count):
        requests.append(Request(semaphore, **kwargs))
        await requests[-1].reached(len(requests))
    return requests


async def recorded(redis: Redis) -> dict[str, int]:
    """What Redis holds for the semaphore, key by key."""
    keys = {"queue": KEYS.queue, "ready": KEYS.ready, "heartbeats": KEYS.heartbeats}
    counts = {name: await redis.zcard(key) for name, key in keys.items()}
    return {**counts, "holders": await redis.zcard(KEYS.holders)}


async def test_satisfies_the_admission_protocol(make_semaphore: MakeSemaphore) -> None:
    semaphore = make_semaphore()
    assert isinstance(semaphore, Admission)
    async with semaphore.acquire() as permit:
        assert isinstance(permit, Permit)
        assert not permit.lost.is_set()


async def test_acquire_and_release(make_semaphore: MakeSemaphore, store: Redis) -> None:
    semaphore = make_semaphore(capacity=2, max_queue=5)
    positions: list[int] = []
    async with semaphore.acquire(on_position=positions.append):
        assert await semaphore.load() == Load(1, 0, 2, 5)
    assert positions == [0]
    assert await semaphore.load() == Load(0, 0, 2, 5)
    assert await recorded(store) == {"queue": 0, "ready": 0, "heartbeats": 0, "holders": 0}


async def test_an_error_in_the_block_releases(make_semaphore: MakeSemaphore) -> None:
    semaphore = make_semaphore()
    with pytest.raises(RuntimeError):
        async with semaphore.acquire():
            raise RuntimeError("generation failed")
    assert (await semaphore.load()).processing == 0


async def test_grants_follow_ticket_order(make_semaphore: MakeSemaphore) -> None:
    semaphore = make_semaphore()
    grants: list[Request] = []
    holder = Request(semaphore)
    await holder.granted.wait()
    requests = await queued(semaphore, 6, grants=grants)
    await holder.release()
    await asyncio.gather(*(r.task for r in requests))
    assert grants == requests


async def test_positions_are_reported_as_the_queue_moves(make_semaphore: MakeSemaphore) -> None:
    semaphore = make_semaphore()
    holder = Request(semaphore)
    await holder.granted.wait()
    first, second, third = await queued(semaphore, 3)
    assert third.positions == [3]
    await holder.release()
    await third.reached(2)
    await first.release()
    await third.reached(1)
    await second.release()
    await third.granted.wait()
    assert third.positions == [3, 2, 1, 0]
    assert first.positions == [1, 0]
    await third.release()


async def test_queue_full_beyond_max_queue(make_semaphore: MakeSemaphore) -> None:
    semaphore = make_semaphore(max_queue=2)
    holder = Request(semaphore)
    await holder.granted.wait()
    waiting = await queued(semaphore, 2)
    with pytest.raises(QueueFull) as raised:
        async with semaphore.acquire():
            pytest.fail("granted beyond the queue")
    assert raised.value.status == 429
    assert raised.value.retry_after is not None
    assert await semaphore.load() == Load(1, 2, 1, 2)
    for request in (holder, *waiting):
        await request.release()


async def test_no_queue_at_all_with_max_queue_zero(make_semaphore: MakeSemaphore) -> None:
    semaphore = make_semaphore(max_queue=0)
    async with semaphore.acquire():
        with pytest.raises(QueueFull):
            async with semaphore.acquire():
                pass


async def test_queue_timeout(make_semaphore: MakeSemaphore, store: Redis) -> None:
    semaphore = make_semaphore(queue_timeout=0.2)
    async with semaphore.acquire():
        with pytest.raises(QueueTimeout) as raised:
            async with semaphore.acquire():
                pytest.fail("granted while the permit is held")
        assert raised.value.status == 503
        assert raised.value.retry_after is not None
        assert await semaphore.load() == Load(1, 0, 1, 64)
    assert await recorded(store) == {"queue": 0, "ready": 0, "heartbeats": 0, "holders": 0}


async def test_load_counts_holders_and_waiters(make_semaphore: MakeSemaphore) -> None:
    semaphore = make_semaphore(capacity=2, max_queue=10)
    holders = [Request(semaphore), Request(semaphore)]
    for holder in holders:
        await holder.granted.wait()
    waiting = await queued(semaphore, 3)
    assert await semaphore.load() == Load(2, 3, 2, 10)
    for request in (*holders, *waiting):
        await request.release()
    assert await semaphore.load() == Load(0, 0, 2, 10)


async def test_instances_share_capacity_and_queue(make_semaphore: MakeSemaphore) -> None:
    one, two = make_semaphore(capacity=2), make_semaphore(capacity=2)
    holders = [Request(one), Request(two)]
    for holder in holders:
        await holder.granted.wait()
    late = Request(two)
    await late.reached(1)
    assert await one.load() == Load(2, 1, 2, 64)
    await holders[0].release()
    await late.granted.wait()
    await late.release()
    await holders[1].release()


async def test_local_slots_gate_grants(make_semaphore: MakeSemaphore) -> None:
    small = make_semaphore(capacity=3, local_slots=1)
    large = make_semaphore(capacity=3, local_slots=2)
    busy = Request(small)
    await busy.granted.wait()
    # A permit is free, but `small` has no slot for it: the request waits, counted in the queue.
    blocked = Request(small)
    await blocked.reached(1)
    assert await small.load() == Load(1, 1, 3, 64)
    # `large` has slots, so its request is granted without waiting behind `blocked`.
    other = Request(large)
    await other.granted.wait()
    assert await small.load() == Load(2, 1, 3, 64)
    await busy.release()
    await blocked.granted.wait()
    assert await small.load() == Load(2, 0, 3, 64)
    await blocked.release()
    await other.release()


async def test_local_slots_go_in_ticket_order(make_semaphore: MakeSemaphore) -> None:
    semaphore = make_semaphore(capacity=5, local_slots=1)
    grants: list[Request] = []
    holder = Request(semaphore)
    await holder.granted.wait()
    requests = await queued(semaphore, 4, grants=grants)
    await holder.release()
    await asyncio.gather(*(r.task for r in requests))
    assert grants == requests


async def test_deleted_lease_sets_lost(make_semaphore: MakeSemaphore, store: Redis) -> None:
    semaphore = make_semaphore(lease_ttl=0.3)
    async with semaphore.acquire() as permit:
        await store.delete(KEYS.holders)
        await asyncio.wait_for(permit.lost.wait(), 5)


async def test_a_permit_outlives_its_lease_ttl(make_semaphore: MakeSemaphore) -> None:
    semaphore = make_semaphore(lease_ttl=0.2)
    async with semaphore.acquire() as permit:
        await asyncio.sleep(0.7)
        assert (await semaphore.load()).processing == 1
        assert not permit.lost.is_set()


async def test_random_cancellation_leaves_nothing_behind(
    make_semaphore: MakeSemaphore, store: Redis
) -> None:
    rng = random.Random(1234)
    instances = [make_semaphore(capacity=3, local_slots=2), make_semaphore(capacity=3)]

    async def use(semaphore: RedisSemaphore) -> None:
        async with semaphore.acquire():
            await asyncio.sleep(rng.uniform(0, 0.003))

    async def cancel_later(task: asyncio.Task[None]) -> None:
        await asyncio.sleep(rng.uniform(0, 0.006))
        task.cancel()

    kept = Request(instances[0])
    await kept.granted.wait()
    for _ in range(40):
        tasks = [asyncio.create_task(use(rng.choice(instances))) for _ in range(8)]
        cancellers = [cancel_later(task) for task in tasks if rng.random() < 0.7]
        await asyncio.gather(*tasks, *cancellers, return_exceptions=True)
        assert await recorded(store) == {"queue": 0, "ready": 0, "heartbeats": 0, "holders": 1}
    await kept.release()
    assert await recorded(store) == {"queue": 0, "ready": 0, "heartbeats": 0, "holders": 0}
    # This instance's slots all came back: it can fill them again.
    holders = [Request(instances[0]), Request(instances[0])]
    for holder in holders:
        await holder.granted.wait()
    for holder in holders:
        await holder.release()


async def test_closing_fails_the_waiters(make_semaphore: MakeSemaphore, store: Redis) -> None:
    semaphore = make_semaphore()
    holder = Request(semaphore)
    await holder.granted.wait()
    (waiter,) = await queued(semaphore, 1)
    await semaphore.aclose()
    with pytest.raises(ServiceUnavailable, match="shutting down"):
        await waiter.task
    await holder.release()
    assert await recorded(store) == {"queue": 0, "ready": 0, "heartbeats": 0, "holders": 0}


@pytest.mark.parametrize(
    "options",
    [{"capacity": 0}, {"local_slots": 0}, {"max_queue": -1}, {"lease_ttl": 0}, {"name": "a}b"}],
)
def test_invalid_options(embedded: Redis, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RedisSemaphore(embedded, **{"capacity": 1, **options})
