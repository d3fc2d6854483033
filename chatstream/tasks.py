"""Background loops that stop when asked, and lease renewal built on them.

On Python 3.11, ``asyncio.wait_for`` (which redis-py uses around socket I/O when a socket
timeout is set) can swallow a cancellation: a loop that only relies on ``task.cancel()`` may
then go on forever, and whoever awaits it hangs. :class:`BackgroundLoop` pairs the cancellation
with an event the loop checks between rounds, so it stops either way; every background loop
of chatstream (lease renewal, the admission queue's listener and poller) is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger("chatstream")


class BackgroundLoop:
    """Runs ``round()`` again and again in a task until :meth:`stop`; ``round`` may wait with
    :meth:`pause`, which returns early once the loop is stopping."""

    def __init__(self, round: Callable[[], Awaitable[object]], *, name: str) -> None:
        self._round = round
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=name)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the loop is told to stop meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def stop(self) -> None:
        """End the loop and wait until it has ended."""
        self._stopping.set()
        self._task.cancel()
        await asyncio.wait([self._task])

    async def _run(self) -> None:
        while not self._stopping.is_set():
            await self._round()


class Renewal:
    """Keeps a lease alive while it is held: ``renew()`` every third of ``ttl`` seconds.

    ``renew`` returns False when the lease is no longer ours. Each try is bounded by the time
    left until the lease expires; a try that fails (the store is unreachable) is retried until
    then. ``lost`` is set when ``renew`` says False or the lease expired unrenewed: the holder
    must then stop what the lease protects.
    """

    def __init__(self, renew: Callable[[], Awaitable[bool]], ttl: float, *, what: str) -> None:
        self.lost = asyncio.Event()
        self._renew = renew
        self._ttl = ttl
        self._what = what
        loop = asyncio.get_running_loop()
        self._expires = loop.time() + ttl
        self._loop = BackgroundLoop(self._round, name=f"renew {what}")

    async def stop(self) -> None:
        await self._loop.stop()

    async def _round(self) -> None:
        await self._loop.pause(self._ttl / 3)
        if self._loop.stopping or self.lost.is_set():
            return
        loop = asyncio.get_running_loop()
        sent = loop.time()
        try:
            async with asyncio.timeout_at(self._expires):
                renewed = await self._renew()
        except Exception as exc:  # the store unreachable, or the lease's time ran out
            logger.warning("could not renew %s: %r", self._what, exc)
            if loop.time() < self._expires:
                return
            renewed = False
        if renewed:
            self._expires = sent + self._ttl
        else:
            logger.warning("%s was lost", self._what)
            self.lost.set()
