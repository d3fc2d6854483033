"""The semaphore's Lua scripts, one per state change, and typed calls to them.

Each script is ``common.lua`` (keys, Redis ``TIME``, purge of expired entries) followed by its own
body. redis-py's ``Script`` objects run them by SHA and load them again after ``NOSCRIPT``, so a
restarted (emptied) Redis needs nothing from the application.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from redis.commands.core import AsyncScript

from ..keys import SemaphoreKeys, client_digest
from ..redis_client import RedisClient


def lua(name: str) -> str:
    """The text of ``<name>.lua`` in this package."""
    return files("chatstream.admission").joinpath(f"{name}.lua").read_text()


ENTER, POLL, RENEW, LEAVE, LOAD = (
    lua("common") + lua(name) for name in ("enter", "poll", "renew", "leave", "load")
)

QUEUE_FULL = -1
CLIENT_FULL = -2


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class SemaphoreScripts:
    """The semaphore's state in Redis: what each script call means, in Python types."""

    def __init__(
        self,
        redis: RedisClient,
        keys: SemaphoreKeys,
        *,
        capacity: int,
        max_queue: int,
        max_per_client: int | None,
        lease_ttl: float,
        waiter_ttl: float,
    ) -> None:
        self._keys = keys.script_keys
        self._channel = keys.wake_channel
        self._capacity = capacity
        self._max_queue = max_queue
        self._max_per_client = max_per_client
        self._lease_ms = _ms(lease_ttl)
        self._waiter_ms = _ms(waiter_ttl)
        self._enter = redis.register_script(ENTER)
        self._poll = redis.register_script(POLL)
        self._renew = redis.register_script(RENEW)
        self._leave = redis.register_script(LEAVE)
        self._load = redis.register_script(LOAD)

    async def enter(self, ticket: str, *, ready: bool, client: str | None) -> tuple[int, int]:
        """Queue ``ticket`` (or grant it at once), as one of ``client``'s tickets. Returns
        ``(position, ticket number)``: position 0 when granted, :data:`QUEUE_FULL` when the queue
        is full, :data:`CLIENT_FULL` when the client already has ``max_per_client`` tickets."""
        cap: tuple[str, int] = ("", 0)  # uncapped
        if client is not None and self._max_per_client is not None:
            cap = (client_digest(client), self._max_per_client)
        args = (int(ready), self._capacity, self._max_queue, self._lease_ms, self._waiter_ms)
        position, number = await self._call(self._enter, ticket, *args, *cap)
        return int(position), int(number)

    async def poll(self, tickets: Sequence[tuple[str, bool]]) -> tuple[float | None, list[int]]:
        """Heartbeat, mark ready and try to grant ``(ticket, ready)`` pairs. Returns the seconds
        until the next lease or heartbeat expiry (``None``: none) and each ticket's position
        (1-based while waiting, 0 granted, -1 expired)."""
        flat = [value for ticket, ready in tickets for value in (ticket, int(ready))]
        reply = await self._call(self._poll, self._capacity, self._lease_ms, self._waiter_ms, *flat)
        next_expiry, *positions = (int(value) for value in reply)
        return (next_expiry / 1000 if next_expiry >= 0 else None), positions

    async def renew(self, ticket: str) -> bool:
        """Extend the lease of ``ticket``; ``False`` when it was already gone."""
        return bool(await self._call(self._renew, ticket, self._lease_ms))

    async def leave(self, ticket: str) -> None:
        """Remove ``ticket`` from the queue or the holders, whichever it is in."""
        await self._call(self._leave, ticket)

    async def load(self) -> tuple[int, int]:
        """``(live holders, live waiters)``."""
        processing, waiting = await self._call(self._load)
        return int(processing), int(waiting)

    async def _call(self, script: AsyncScript, *args: str | int) -> Any:
        return await script(keys=self._keys, args=[self._channel, *args])
