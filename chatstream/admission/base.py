"""The admission contract: how many generations run at once, and who waits.

The handler only sees :class:`Admission`. ``acquire()`` is an async context manager that waits
its turn (FIFO), reports the queue position while waiting, and yields a :class:`Permit` while
the generation runs. It raises :class:`~chatstream.errors.TooManyRequests` when the ``client``
already has as many requests queued or running as it may, :class:`~chatstream.errors.QueueFull`
when the queue is full, :class:`~chatstream.errors.QueueTimeout` when the wait is too long and
:class:`~chatstream.errors.ServiceUnavailable` when its store fails. Leaving the context (normally,
by exception or by task cancellation at any await point) gives everything back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

PositionCallback = Callable[[int], None]
"""Called with the 1-based queue position each time it changes (``0`` once granted)."""


@dataclass(frozen=True, slots=True)
class Load:
    """What ``GET /get_load`` reports; cluster-wide for the Redis semaphore."""

    processing: int
    waiting: int
    capacity: int
    queue_capacity: int


@runtime_checkable
class Permit(Protocol):
    """A granted slot. ``lost`` is set when the grant could not be kept (lease renewal failed):
    the holder must then stop generating."""

    @property
    def lost(self) -> asyncio.Event: ...


@runtime_checkable
class Admission(Protocol):
    def acquire(
        self, *, client: str | None = None, on_position: PositionCallback | None = None
    ) -> AbstractAsyncContextManager[Permit]: ...

    async def load(self) -> Load: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class RateLimiter(Protocol):
    """How many turns one client may start in a while; ``hit`` counts one more or raises
    :class:`~chatstream.errors.TooManyRequests` (with ``retry_after``)."""

    async def hit(self, client: str) -> None: ...
