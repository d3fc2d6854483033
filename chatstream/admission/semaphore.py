"""``RedisSemaphore``: the cluster-wide fair queue in front of generation.

State lives in Redis under one hash tag (:mod:`chatstream.keys`). A request is a ticket:
a random id made here, so cleanup by id works whatever the last script did. Waiting, it sits in a
sorted set scored by its ticket number (``INCR``: the FIFO order) and heartbeats; granted, it sits
in the holders' sorted set scored by its lease expiry and renews the lease. Every change is one Lua
script (:mod:`chatstream.admission.scripts`) that first drops expired waiters and holders, so the
tickets of a crashed instance vanish by themselves. A ticket with a client counts for that client
(queued or granted) until it leaves or expires, in the same script that removes it.

An instance's waiters are looked after by one poll task: one script call heartbeats them all,
grants what can be granted and returns their positions. It runs when a script publishes on the
wake channel (a release, a grant, an expiry), when the next lease or heartbeat in Redis expires,
and at least every :data:`RECHECK_INTERVAL` (pub/sub loses messages while reconnecting, e.g.
to a new master after a failover). On a Redis Cluster a ``PUBLISH`` is broadcast to every node;
the listener subscribes on the node that serves the channel's slot, the semaphore's own.

Why one module: the semaphore, its local tickets and its permits share this instance's slot
accounting and wake-up signal; apart, each would reach into the others' state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from ..config import AdmissionConfig
from ..errors import QueueFull, QueueTimeout, ServiceUnavailable, TooManyRequests
from ..keys import DEFAULT_PREFIX, SemaphoreKeys
from ..redis_client import REDIS_ERRORS, RedisClient
from ..tasks import BackgroundLoop, Renewal
from .base import Load, Permit, PositionCallback
from .scripts import CLIENT_FULL, QUEUE_FULL, SemaphoreScripts

RECHECK_INTERVAL = 1.0
"""Seconds between an instance's looks at its waiters without a signal; also their heartbeat."""
WAITER_TTL = 3.0
"""Seconds a waiter stays queued without a heartbeat, e.g. after its instance was killed."""

UNAVAILABLE = "the admission store is unavailable"

logger = logging.getLogger(__name__)


class RedisSemaphore:
    """At most ``capacity`` generations at once across every instance sharing ``redis``.

    Requests are granted in FIFO order of their tickets. ``max_queue`` bounds how many wait
    cluster-wide (:class:`~chatstream.errors.QueueFull` beyond), ``queue_timeout`` how long each
    waits (:class:`~chatstream.errors.QueueTimeout`), ``max_per_client`` how many one client may
    have queued or running at once (:class:`~chatstream.errors.TooManyRequests` beyond; ``None``:
    no cap), so that one client never fills the queue. A permit is a lease of ``lease_ttl``
    seconds, renewed every third of it while held: a crashed holder's permit returns after at most
    ``lease_ttl``. Every instance must use the same ``name``, ``capacity``, ``max_queue`` and
    ``max_per_client``.

    ``local_slots`` is this instance's engine slots. Every request takes a global ticket at once,
    so the queue that ``max_queue`` bounds and the positions reported are cluster-wide; but a
    ticket can only be granted (is *ready*) while its instance has a slot for it, and slots go to
    this instance's tickets in ticket order. Grants go to the oldest ready tickets, so an instance
    whose slots are busy never takes a permit it cannot use, nor holds back instances that can.
    """

    def __init__(
        self,
        redis: RedisClient,
        *,
        name: str = "generation",
        capacity: int,
        local_slots: int | None = None,
        max_queue: int = AdmissionConfig.max_queue,
        queue_timeout: float = AdmissionConfig.queue_timeout,
        lease_ttl: float = AdmissionConfig.lease_ttl,
        max_per_client: int | None = AdmissionConfig.max_per_client,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        if capacity < 1 or any(n is not None and n < 1 for n in (local_slots, max_per_client)):
            raise ValueError("capacity, local_slots and max_per_client must be at least 1")
        if max_queue < 0 or queue_timeout <= 0 or lease_ttl <= 0:
            raise ValueError("max_queue, queue_timeout and lease_ttl must be positive")
        self.capacity = capacity
        self.local_slots = local_slots
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.lease_ttl = lease_ttl
        self.max_per_client = max_per_client
        keys = SemaphoreKeys.build(name, prefix)
        self._redis = redis
        self._wake_channel = keys.wake_channel
        self._scripts = SemaphoreScripts(
            redis,
            keys,
            capacity=capacity,
            max_queue=max_queue,
            max_per_client=max_per_client,
            lease_ttl=lease_ttl,
            waiter_ttl=WAITER_TTL,
        )
        self._queued: dict[str, _Ticket] = {}
        self._slots_used = 0
        self._wake = asyncio.Event()
        self._listener: BackgroundLoop | None = None
        self._poller: BackgroundLoop | None = None
        self._pubsub: Any = None
        self._poll_delay = RECHECK_INTERVAL

    @asynccontextmanager
    async def acquire(
        self, *, client: str | None = None, on_position: PositionCallback | None = None
    ) -> AsyncIterator[Permit]:
        """Wait for a permit and hold it for the ``async with`` block.

        ``client`` identifies who asks (a user id, an address, an API key's digest; ``None``: no
        cap). ``on_position`` gets the 1-based queue position each time it changes, then ``0``
        once granted. Raises :class:`~chatstream.errors.TooManyRequests` (the client's cap),
        :class:`~chatstream.errors.QueueFull`, :class:`~chatstream.errors.QueueTimeout` or
        :class:`~chatstream.errors.ServiceUnavailable` (a Redis error). However the block is
        left, cancellation included, the ticket is gone from Redis when this returns.
        """
        report = on_position or _ignore
        ticket = _Ticket(secrets.token_hex(16), has_slot=self._take_slot_on_arrival())
        self._queued[ticket.id] = ticket
        permit: _Permit | None = None
        try:
            await self._wait_for_grant(ticket, client, report)
            permit = _Permit(self._scripts, ticket.id, self.lease_ttl)
            report(0)
            yield permit
        finally:
            await _to_completion(self._leave(ticket, permit))

    async def load(self) -> Load:
        try:
            processing, waiting = await self._scripts.load()
        except REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc
        return Load(processing, waiting, self.capacity, self.max_queue)

    async def aclose(self) -> None:
        """Stop the background tasks; this instance's waiters fail with ServiceUnavailable.
        Holders keep their permits until they leave their block. The client stays open."""
        loops = [loop for loop in (self._listener, self._poller) if loop is not None]
        self._listener = self._poller = None
        await asyncio.gather(*(loop.stop() for loop in loops))
        if self._pubsub is not None:
            pubsub, self._pubsub = self._pubsub, None
            await pubsub.aclose()
        for ticket in self._queued.values():
            ticket.fail("the server is shutting down")

    async def _wait_for_grant(
        self, ticket: _Ticket, client: str | None, report: PositionCallback
    ) -> None:
        try:
            async with asyncio.timeout(self.queue_timeout):
                position, ticket.number = await self._scripts.enter(
                    ticket.id, ready=ticket.has_slot, client=client
                )
                if position == CLIENT_FULL:
                    # Retry-After stays at 1 s: what frees a place is one of the client's own
                    # requests ending, which it sees and the queue cannot foresee.
                    raise TooManyRequests(
                        f"at most {self.max_per_client} requests of one client may be queued or "
                        "running at once"
                    )
                if position == QUEUE_FULL:
                    raise QueueFull(f"{self.max_queue} requests are already waiting")
                ticket.position = position
                if position:
                    self._hand_out_slots()
                    self._watch()
                    # A signal sent before this ticket was known here must not be missed.
                    self._wake.set()
                while position:
                    report(position)
                    position = await ticket.next_position()
        except TimeoutError as exc:
            raise QueueTimeout(f"no generation slot within {self.queue_timeout:g} s") from exc
        except REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc
        finally:
            self._queued.pop(ticket.id, None)

    async def _leave(self, ticket: _Ticket, permit: _Permit | None) -> None:
        try:
            if permit is not None:
                await permit.stop()
            await self._scripts.leave(ticket.id)
        except REDIS_ERRORS as exc:
            logger.warning("admission ticket %s left to expire in Redis: %s", ticket.id, exc)
        finally:
            if ticket.has_slot:
                self._release_slot()

    def _take_slot_on_arrival(self) -> bool:
        # Older local tickets still without a slot get one first.
        return all(t.has_slot for t in self._queued.values()) and self._take_slot()

    def _take_slot(self) -> bool:
        if self.local_slots is None:
            return True
        if self._slots_used == self.local_slots:
            return False
        self._slots_used += 1
        return True

    def _release_slot(self) -> None:
        if self.local_slots is not None:
            self._slots_used -= 1
            self._hand_out_slots()

    def _hand_out_slots(self) -> None:
        slotless = (t for t in self._queued.values() if t.number and not t.has_slot)
        for ticket in sorted(slotless, key=attrgetter("number")):
            if not self._take_slot():
                return
            ticket.has_slot = True
            self._wake.set()

    def _watch(self) -> None:
        if self._listener is None:
            self._listener = BackgroundLoop(self._listen, name="admission-listen")
            self._poller = BackgroundLoop(self._poll_when_woken, name="admission-poll")

    async def _listen(self) -> None:
        """One look at the wake channel; any error is logged and retried after a pause (the
        queue's periodic re-check covers what was missed meanwhile)."""
        try:
            if self._pubsub is None:
                self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            if not self._pubsub.subscribed:
                await self._pubsub.subscribe(self._wake_channel)
                self._wake.set()
            if await self._pubsub.get_message(timeout=RECHECK_INTERVAL) is not None:
                self._wake.set()
        except Exception as exc:
            logger.warning("admission wake-up listener: %r; retrying", exc)
            pubsub, self._pubsub = self._pubsub, None
            if pubsub is not None:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            if self._listener is not None:
                await self._listener.pause(RECHECK_INTERVAL)

    async def _poll_when_woken(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._poll_delay):
                await self._wake.wait()
        self._wake.clear()
        self._poll_delay = await self._poll()

    async def _poll(self) -> float:
        """Look at every local waiter once; returns how long the next look may wait."""
        tickets = sorted((t for t in self._queued.values() if t.number), key=attrgetter("number"))
        if not tickets:
            return RECHECK_INTERVAL
        try:
            next_expiry, positions = await self._scripts.poll([(t.id, t.has_slot) for t in tickets])
        except Exception as exc:
            logger.warning("admission poll failed: %r", exc)
            for ticket in tickets:
                ticket.fail(UNAVAILABLE, exc)
            return RECHECK_INTERVAL
        for ticket, position in zip(tickets, positions, strict=True):
            ticket.update(position)
        return RECHECK_INTERVAL if next_expiry is None else min(RECHECK_INTERVAL, next_expiry)


@dataclass(eq=False)
class _Ticket:
    """One local request, from arrival until it is granted or gives up."""

    id: str
    has_slot: bool
    number: int = 0
    position: int = 0
    failure: str | None = None
    cause: Exception | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def update(self, position: int) -> None:
        if position < 0:
            # Its heartbeat lapsed (this instance's look at its waiters came over WAITER_TTL
            # late: an event loop held up that long), or Redis lost the queue (a failover).
            logger.warning("admission: waiter %s lost its place in the queue", self.id)
            self.fail("this request's place in the queue expired")
        elif position != self.position:
            self.position = position
            self.changed.set()

    def fail(self, failure: str, cause: Exception | None = None) -> None:
        self.failure, self.cause = failure, cause
        self.changed.set()

    async def next_position(self) -> int:
        await self.changed.wait()
        self.changed.clear()
        if self.failure is not None:
            raise ServiceUnavailable(self.failure) from self.cause
        return self.position


class _Permit:
    """A granted ticket; its lease is renewed every third of its TTL until :meth:`stop`."""

    def __init__(self, scripts: SemaphoreScripts, ticket: str, lease_ttl: float) -> None:
        async def renew() -> bool:
            return await scripts.renew(ticket)

        self._renewal = Renewal(renew, lease_ttl, what=f"admission lease {ticket}")
        self.lost = self._renewal.lost

    async def stop(self) -> None:
        await self._renewal.stop()


def _ignore(position: int) -> None:
    pass


def _unavailable(exc: Exception) -> ServiceUnavailable:
    """What a client sees of a Redis error: a fixed text; the detail goes to the log."""
    logger.warning("admission store error: %r", exc)
    return ServiceUnavailable(UNAVAILABLE)


async def _to_completion(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run ``cleanup`` to its end even if the caller is cancelled meanwhile; the cancellation is
    raised once it is done, so a cancelled request leaves nothing behind."""
    task = asyncio.ensure_future(cleanup)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    task.result()
