"""Where a generation's events go: the :class:`ReplySink` contract, and the queue reporter.

The HTTP layer's wire formats (plain text, server-sent events, OpenAI's) implement it; the
generation run (:mod:`chatstream.chat.run`) only ever talks to this contract.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from ..errors import ChatStreamError

KEEP_ALIVE_INTERVAL = 15.0
"""Seconds between keep-alives while a request waits in the queue."""


class ClientGone(Exception):
    """Sending failed: the client has closed the connection."""


class ReplySink(Protocol):
    """What a generation writes to, in this order: ``queued``/``keep_alive`` while waiting,
    ``start`` once generation starts, ``delta``s, then ``done`` or ``error``, and ``end``; or,
    when the request is refused before anything was sent, ``reject`` alone. ``started`` tells
    whether the answer's status line went out. Sending to a client that left raises
    :class:`ClientGone`."""

    started: bool

    async def start(self) -> None: ...

    async def queued(self, position: int) -> None: ...

    async def keep_alive(self) -> None: ...

    async def delta(self, text: str) -> None: ...

    async def done(self, summary: dict[str, Any]) -> None: ...

    async def error(self, error: ChatStreamError) -> None: ...

    async def reject(self, error: ChatStreamError) -> None: ...

    async def end(self) -> None: ...


class QueueReporter:
    """Tells the client its queue position while it waits, with keep-alives in between."""

    def __init__(self, sink: ReplySink, interval: float = KEEP_ALIVE_INTERVAL) -> None:
        self._sink = sink
        self._interval = interval
        self._position = 0
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._report())

    def update(self, position: int) -> None:
        self._position = position
        self._changed.set()

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ClientGone):
            await self._task

    async def _report(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._changed.wait()
            if self._changed.is_set():
                self._changed.clear()
                if self._position > 0:
                    await self._sink.queued(self._position)
            else:
                await self._sink.keep_alive()


async def quietly(action: Any) -> None:
    """Send something to a client that may already have left."""
    with contextlib.suppress(ClientGone, OSError):
        await action
