"""A generation run as a Starlette response: what ``handle_chat_stream_request`` returns.

:class:`StreamedReply` is a real :class:`~starlette.responses.Response`: it is initialised like
Starlette's own ``StreamingResponse``, so an endpoint may set headers and cookies on it
(``response.headers[...]``, ``response.set_cookie(...)``) and a ``background`` task, as on any
response. When served, it writes the run's reply through a wire-format writer, and interrupts
the run as soon as the client disconnects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..chat.run import GenerationRun
from ..chat.sink import ReplySink

WriterFactory = Callable[[Send, Sequence[tuple[bytes, bytes]]], ReplySink]
"""Makes the writer of one response from its ``send`` and the response's own headers."""


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
