r"""Replies as Starlette responses: what ``handle_chat_stream_request`` returns.

Both are real :class:`~starlette.responses.Response`\ s, initialised like Starlette's own
``StreamingResponse``, so an endpoint may set headers and cookies on them
(``response.headers[...]``, ``response.set_cookie(...)``) and a ``background`` task, as on any
response. :class:`StreamedReply` runs its generation inside the response and interrupts it as
soon as the client disconnects (the stateless ``/v1`` API). :class:`FollowedReply` follows a
chat reply that runs on its own (:mod:`chatstream.replies`), which outlives the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Protocol

from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..chat.run import GenerationRun
from ..chat.sink import ClientGone, ReplySink
from ..errors import ChatStreamError
from ..replies.hub import FollowItem, KeepAlive, Queued, Refused, ReplyEvent

WriterFactory = Callable[[Send, Sequence[tuple[bytes, bytes]]], ReplySink]
"""Makes the writer of one response from its ``send`` and the response's own headers."""


class Follower(Protocol):
    """What a follower writes through (the chat wire formats); ``started``: its status line
    went out."""

    started: bool

    async def queued(self, position: int, eta_s: float | None = None) -> None: ...

    async def keep_alive(self) -> None: ...

    async def event(self, event: ReplyEvent) -> None: ...

    async def reject(self, error: ChatStreamError) -> None: ...

    async def error(self, error: ChatStreamError) -> None: ...

    async def end(self) -> None: ...


FollowerFactory = Callable[[Send, Sequence[tuple[bytes, bytes]]], Follower]


class StreamedReply(Response):
    """Streams ``run``'s reply in the format ``writer`` makes."""

    def __init__(
        self,
        run: GenerationRun,
        writer: WriterFactory,
        *,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        self.run = run
        self.make_writer = writer
        self.status_code = 200
        self.background = background
        # No media type and no body here: the writer sets the content type of what it sends
        # (the stream, or a JSON error), as StreamingResponse leaves out the content length.
        self.media_type = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        writer = self.make_writer(send, self.raw_headers)
        watcher = asyncio.create_task(self._watch_disconnect(receive))
        try:
            await self.run.stream(writer)
        finally:
            watcher.cancel()
        if self.background is not None:
            await self.background()

    async def _watch_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.run.interrupt("client_left")


class FollowedReply(Response):
    """Streams a reply to one follower: the client that asked for it, or one that attached.

    ``items`` are the reply's (:mod:`chatstream.replies.hub`): its queue position, its
    numbered events, a refusal (answered as its JSON error when nothing was sent yet) and
    keep-alives. The client leaving only ends this response: the reply goes on for its other
    followers and its detach grace. When the reply ends while its asking client is still there,
    the response waits for ``finished`` (the run: its turn stored, its callback run), so the
    request completes after the callback, as it did when a reply was bound to its connection.
    """

    def __init__(
        self,
        items: AsyncGenerator[FollowItem, None],
        writer: FollowerFactory,
        *,
        finished: asyncio.Task[None] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.items = items
        self.make_writer = writer
        self.finished = finished
        self.status_code = 200
        self.background = None
        self.media_type = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        writer = self.make_writer(send, self.raw_headers)
        following = asyncio.create_task(self._follow(writer))
        watcher = asyncio.create_task(self._watch_disconnect(receive, following))
        try:
            stayed = await following
        finally:
            watcher.cancel()
        if stayed and self.finished is not None:
            await asyncio.wait({self.finished})
        if self.background is not None:
            await self.background()

    async def _follow(self, writer: Follower) -> bool:
        """Write the items; False when the client left (or the writing failed)."""
        try:
            async with contextlib.aclosing(self.items):
                async for item in self.items:
                    if isinstance(item, Refused):  # as an error event once the stream began
                        await (writer.error if writer.started else writer.reject)(item.error)
                    elif isinstance(item, Queued):
                        await writer.queued(item.position, item.eta_s)
                    elif isinstance(item, KeepAlive):
                        await writer.keep_alive()
                    else:
                        await writer.event(item)
            await writer.end()
        except (asyncio.CancelledError, ClientGone, OSError):
            return False
        return True

    async def _watch_disconnect(self, receive: Receive, following: asyncio.Task[bool]) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        following.cancel()
