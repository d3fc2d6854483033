"""RedisSemaphore on the embedded store and on real Redis: the behaviour one instance sees."""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from chatstream.admission.base import Admission, Load, Permit
from chatstream.admission.semaphore import RedisSemaphore
from chatstream.config import AdmissionConfig
from chatstream.errors import QueueFull, QueueTimeout, ServiceUnavailable, TooManyRequests
from chatstream.keys import SemaphoreKeys, client_digest

KEYS = SemaphoreKeys.build("generation")

MakeSemaphore = Callable[..., RedisSemaphore]


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
    """One request (of ``client``) in its own task: records its positions and holds its permit
    until released, or, given ``grants``, appends itself there once granted and releases at once."""

    def __init__(
        self,
        semaphore: RedisSemaphore,
        grants: list[Request] | None = None,
        *,
        client: str | None = None,
    ) -> None:
        self.positions: list[int] = []
        self.granted = asyncio.Event()
        self._grants = grants
        self._seen: defaultdict[int, asyncio.Event] = defaultdict(asyncio.Event)
        self._admitted = asyncio.Event()
        self._release = asyncio.Event()
        if grants is not None:
            self._release.set()
        self.task = asyncio.create_task(self._run(semaphore, client))

    async def _run(self, semaphore: RedisSemaphore, client: str | None) -> None:
        async with semaphore.acquire(client=client, on_position=self._report):
            if self._grants is not None:
                self._grants.append(self)
            self.granted.set()
            await self._release.wait()

    def _report(self, position: int) -> None:
        self.positions.append(position)
        self._seen[position].set()
        self._admitted.set()

    async def admitted(self) -> bool:
        """Whether the request got into the queue or a permit; False when it was refused."""
        waiting = asyncio.ensure_future(self._admitted.wait())
        await asyncio.wait([waiting, self.task], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        return self._admitted.is_set()

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


async def release_all(requests: list[Request]) -> None:
    """Release requests started together, whichever of them was granted first."""
    await asyncio.gather(*(request.release() for request in requests))


async def queued(semaphore: RedisSemaphore, count: int, **kwargs: Any) -> list[Request]:
    """``count`` requests, queued one after the other (so their ticket order is known)."""
    requests: list[Request] = []
    for _ in range(count):
        requests.append(Request(semaphore, **kwargs))
        await requests[-1].reached(len(requests))
    return requests


async def client_tickets(redis: Redis) -> dict[str, int]:
    """How many tickets each client has queued or granted, by client digest, as Redis holds it;
    checks that it agrees with the clients recorded per ticket."""
    counts = {text(k): int(v) for k, v in (await redis.hgetall(KEYS.client_tickets)).items()}
    owners = Counter(text(v) for v in (await redis.hgetall(KEYS.ticket_clients)).values())
    assert counts == dict(owners)
    return counts


async def only(redis: Redis, key: str) -> bytes:
    """The one ticket in the sorted set ``key``."""
    (ticket,) = await redis.zrange(key, 0, -1)
    assert isinstance(ticket, bytes)
    return ticket


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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
    instances = [
        make_semaphore(capacity=3, local_slots=2, max_per_client=3),
        make_semaphore(capacity=3, max_per_client=3),
    ]
    clients = ["alice", "bob", "carol", None]

    async def use(semaphore: RedisSemaphore) -> None:
        async with semaphore.acquire(client=rng.choice(clients)):
            await asyncio.sleep(rng.uniform(0, 0.003))

    async def cancel_later(task: asyncio.Task[None]) -> None:
        await asyncio.sleep(rng.uniform(0, 0.006))
        task.cancel()

    kept = Request(instances[0], client="alice")
    await kept.granted.wait()
    for _ in range(40):
        tasks = [asyncio.create_task(use(rng.choice(instances))) for _ in range(8)]
        cancellers = [cancel_later(task) for task in tasks if rng.random() < 0.7]
        await asyncio.gather(*tasks, *cancellers, return_exceptions=True)
        assert await recorded(store) == {"queue": 0, "ready": 0, "heartbeats": 0, "holders": 1}
        assert await client_tickets(store) == {client_digest("alice"): 1}
    await kept.release()
    assert await recorded(store) == {"queue": 0, "ready": 0, "heartbeats": 0, "holders": 0}
    assert await client_tickets(store) == {}
    # This instance's slots all came back: it can fill them again.
    holders = [Request(instances[0]), Request(instances[0])]
    for holder in holders:
        await holder.granted.wait()
    for holder in holders:
        await holder.release()


async def refused(request: Request) -> TooManyRequests:
    """What a request turned away before it queued was told."""
    assert not await request.admitted()
    with pytest.raises(TooManyRequests) as raised:
        await request.task
    return raised.value


async def test_a_client_has_at_most_max_per_client_requests_queued_or_running(
    make_semaphore: MakeSemaphore, store: Redis
) -> None:
    semaphore = make_semaphore(max_per_client=2)
    running = Request(semaphore, client="alice")
    await running.granted.wait()
    waiting = Request(semaphore, client="alice")
    await waiting.reached(1)
    refusal = await refused(Request(semaphore, client="alice"))
    assert (refusal.status, refusal.code, refusal.retry_after) == (429, "too_many_requests", 1)
    assert refusal.message == "at most 2 requests of one client may be queued or running at once"
    other = Request(semaphore, client="bob")
    await other.reached(2)
    assert await semaphore.load() == Load(1, 2, 1, 64)
    assert await client_tickets(store) == {client_digest("alice"): 2, client_digest("bob"): 1}
    # Granted, a request still counts for its client.
    await running.release()
    await waiting.granted.wait()
    assert await client_tickets(store) == {client_digest("alice"): 1, client_digest("bob"): 1}
    later = Request(semaphore, client="alice")
    await later.reached(2)
    await refused(Request(semaphore, client="alice"))
    for request in (waiting, other, later):
        await request.release()
    assert await client_tickets(store) == {}


async def test_one_client_cannot_fill_the_queue(make_semaphore: MakeSemaphore) -> None:
    semaphore = make_semaphore()  # the default max_queue and max_per_client
    flood = [Request(semaphore, client="203.0.113.7") for _ in range(72)]
    admitted = [request for request in flood if await request.admitted()]
    assert len(admitted) == AdmissionConfig.max_per_client
    for request in flood:
        if request not in admitted:
            await refused(request)
    visitor = Request(semaphore, client="198.51.100.2")
    await visitor.reached(len(admitted))
    await release_all([*admitted, visitor])


async def test_cancelling_a_queued_request_frees_its_clients_place(
    make_semaphore: MakeSemaphore, store: Redis
) -> None:
    semaphore = make_semaphore(max_per_client=1)
    holder = Request(semaphore)
    await holder.granted.wait()
    waiting = Request(semaphore, client="alice")
    await waiting.reached(1)
    await refused(Request(semaphore, client="alice"))
    waiting.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting.task
    assert await client_tickets(store) == {}
    later = Request(semaphore, client="alice")
    await later.reached(1)
    await holder.release()
    await later.release()


@pytest.mark.parametrize(("max_per_client", "client"), [(1, None), (None, "alice")])
async def test_no_cap_without_a_client_or_a_max(
    make_semaphore: MakeSemaphore, store: Redis, max_per_client: int | None, client: str | None
) -> None:
    semaphore = make_semaphore(max_per_client=max_per_client)
    requests = [Request(semaphore, client=client) for _ in range(3)]
    assert [await request.admitted() for request in requests] == [True, True, True]
    assert await client_tickets(store) == {}
    await release_all(requests)


async def test_expired_tickets_no_longer_count_for_their_client(
    make_semaphore: MakeSemaphore, store: Redis
) -> None:
    semaphore = make_semaphore(max_per_client=2)
    holder = Request(semaphore, client="alice")
    await holder.granted.wait()
    waiter = Request(semaphore, client="alice")
    await waiter.reached(1)
    # Their heartbeat and lease run out, as if their instance had died: the next script drops them.
    await store.zadd(KEYS.heartbeats, {await only(store, KEYS.heartbeats): 0})
    await semaphore.load()
    assert await client_tickets(store) == {client_digest("alice"): 1}
    await store.zadd(KEYS.holders, {await only(store, KEYS.holders): 0})
    await semaphore.load()
    assert await client_tickets(store) == {}
    # Leaving afterwards forgets nothing more.
    with pytest.raises(ServiceUnavailable, match="expired"):
        await waiter.task
    await holder.release()
    assert await client_tickets(store) == {}
    again = [Request(semaphore, client="alice") for _ in range(2)]
    assert [await request.admitted() for request in again] == [True, True]
    await release_all(again)


async def test_tickets_gone_without_a_trace_do_not_lock_their_client_out(
    make_semaphore: MakeSemaphore, store: Redis
) -> None:
    semaphore = make_semaphore(capacity=2, max_per_client=1)
    first = Request(semaphore, client="alice")
    await first.granted.wait()
    await refused(Request(semaphore, client="alice"))
    # The ticket vanishes and its client is not told (as when an older instance purges it).
    await store.delete(KEYS.holders)
    second = Request(semaphore, client="alice")
    await second.granted.wait()
    assert await client_tickets(store) == {client_digest("alice"): 1}
    await first.release()
    assert await client_tickets(store) == {client_digest("alice"): 1}
    await second.release()
    assert await client_tickets(store) == {}


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
    [
        {"capacity": 0},
        {"local_slots": 0},
        {"max_queue": -1},
        {"lease_ttl": 0},
        {"max_per_client": 0},
        {"name": "a}b"},
    ],
)
def test_invalid_options(embedded: Redis, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RedisSemaphore(embedded, **{"capacity": 1, **options})
