"""The token channel: one generation's token ids, from the worker thread that runs the model to
the task on the event loop that streams them.

Both transformers engines run their model off the event loop, and each of their generations
needs the same two-way link: ids (and at last the end, with the worker's exception if it
failed) go to the consumer through ``loop.call_soon_threadsafe`` into an ``asyncio.Queue``,
so the consumer never polls; and the consumer's leaving goes to the worker as ``cancelled``,
which the worker reads before each decoding step. ``close()`` waits for the end, so the
generation's slot is free when it returns. :func:`post_all` hands a whole batch's step to its
channels with one wake-up of the event loop, not one per row.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class _End:
    error: BaseException | None


class TokenChannel:
    """Token ids from a worker thread to one consumer; create it on the consumer's loop.

    The worker calls :meth:`post` and then :meth:`end` (from any thread), and sets
    ``prompt_tokens`` and ``cached_tokens`` before the end. The consumer calls
    :meth:`receive` until it returns ``None``, or :meth:`close` to stop the generation early.
    """

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.cached_tokens = 0  # of the prompt tokens, those whose keys and values were cached
        self.cancelled = threading.Event()  # the consumer left: stop within one decoding step
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[list[int] | _End] = asyncio.Queue()
        self._ending = False  # the worker has posted the end
        self._ended = False  # the consumer has read it

    def post(self, ids: list[int]) -> None:
        """Hand newly generated ids to the consumer."""
        self._put(ids)

    def end(self, error: BaseException | None = None) -> None:
        """Hand over the end of the generation (only the first call counts), with the
        exception that ended it, if any."""
        if not self._ending:
            self._ending = True
            self._put(_End(error))

    async def receive(self) -> list[int] | None:
        """The next ids, or ``None`` at the end; raises the worker's exception."""
        if self._ended:
            return None
        message = await self._queue.get()
        if isinstance(message, list):
            return message
        self._ended = True
        if message.error is not None:
            raise message.error
        return None

    async def close(self) -> None:
        """Stop the generation (within one decoding step) and wait until the worker has."""
        self.cancelled.set()
        while not self._ended:
            self._ended = isinstance(await self._queue.get(), _End)

    def _put(self, message: list[int] | _End) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, message)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled.set()


def post_all(posts: Sequence[tuple[TokenChannel, list[int]]]) -> None:
    """:meth:`TokenChannel.post` to each channel, waking each event loop once for all of its
    channels (a batch's step reaches all its rows' consumers in one callback)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[TokenChannel, list[int]]]] = {}
    for channel, ids in posts:
        by_loop.setdefault(channel._loop, []).append((channel, ids))
    for loop, batch in by_loop.items():
        try:
            loop.call_soon_threadsafe(_deliver, batch)
        except RuntimeError:  # the loop is closed
            for channel, _ in batch:
                channel.cancelled.set()


def _deliver(posts: list[tuple[TokenChannel, list[int]]]) -> None:
    for channel, ids in posts:
        channel._queue.put_nowait(ids)
