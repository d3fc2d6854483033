"""Wire formats of a chat stream: plain UTF-8 text deltas, or server-sent events.

A writer owns the ``send`` of one response and implements
:class:`~chatstream.chat.sink.ReplySink`. It starts the response lazily, so a request that is
refused before anything was sent still gets a proper status code and JSON error. ``headers``
are what the endpoint set on the response (cookies, custom headers): they go out with the
stream or with the error alike; the writer adds its own content type and stream headers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from starlette.responses import Response
from starlette.types import Message, Send

from ..chat.sink import ClientGone
from ..errors import ChatStreamError
from .errors import error_response
from .responses import RAW_PRIVATE_HEADERS

RawHeaders = Sequence[tuple[bytes, bytes]]

_BODY_HEADERS = (b"content-type", b"content-length")


class TextStreamWriter:
    """``200 text/plain; charset=utf-8``: the reply's text, chunk by chunk; its end is the
    body's end. Queue positions and the final summary are not part of this format."""

    media_type = "text/plain; charset=utf-8"

    def __init__(self, send: Send, headers: RawHeaders, *, message_id: str) -> None:
        self._send = send
        self.message_id = message_id
        self._headers = [(k, v) for k, v in headers if k.lower() not in _BODY_HEADERS]
        self.started = False

    async def start(self) -> None:
        if self.started:
            return
        self.started = True
        headers = [
            *self._headers,
            (b"content-type", self.media_type.encode()),
            *RAW_PRIVATE_HEADERS,
            (b"x-accel-buffering", b"no"),
            (b"x-message-id", self.message_id.encode()),
        ]
        await self._emit({"type": "http.response.start", "status": 200, "headers": headers})

    async def queued(self, position: int) -> None:
        """Plain text has no queue events: the response starts once generation does."""

    async def keep_alive(self) -> None:
        """Nothing to send before the response starts."""

    async def delta(self, text: str) -> None:
        await self.start()
        await self._body(text.encode())

    async def done(self, summary: dict[str, Any]) -> None:
        """The body's end is the reply's end."""

    async def error(self, error: ChatStreamError) -> None:
        """A plain stream cut short simply ends."""

    async def reject(self, error: ChatStreamError) -> None:
        """Answer with the error's status and JSON body instead of a stream."""
        await self.respond(error_response(error))

    async def respond(self, response: Response) -> None:
        """Send ``response``, a whole answer, with the endpoint's headers (once only)."""
        if self.started:
            return
        self.started = True
        headers = [*self._headers, *response.raw_headers]
        start = {"type": "http.response.start", "status": response.status_code}
        await self._emit({**start, "headers": headers})
        await self._emit({"type": "http.response.body", "body": bytes(response.body)})

    async def end(self) -> None:
        await self.start()
        await self._emit({"type": "http.response.body", "body": b"", "more_body": False})

    async def _body(self, chunk: bytes) -> None:
        await self._emit({"type": "http.response.body", "body": chunk, "more_body": True})

    async def _emit(self, message: Message) -> None:
        try:
            await self._send(message)
        except OSError as exc:  # uvicorn's ClientDisconnected, a broken pipe
            raise ClientGone() from exc


class EventStreamWriter(TextStreamWriter):
    """``text/event-stream``: ``queued``, ``delta``, then ``done`` or ``error`` events, with
    comment lines as keep-alives while the request waits in the queue."""

    media_type = "text/event-stream; charset=utf-8"

    async def queued(self, position: int) -> None:
        await self._event("queued", {"position": position})

    async def keep_alive(self) -> None:
        await self.start()
        await self._body(b": keep-alive\n\n")

    async def delta(self, text: str) -> None:
        await self._event("delta", {"text": text})

    async def done(self, summary: dict[str, Any]) -> None:
        await self._event("done", summary)

    async def error(self, error: ChatStreamError) -> None:
        await self._event(
            "error", {"code": error.code, "message": error.message, **error.details()}
        )

    async def _event(self, name: str, data: dict[str, Any]) -> None:
        await self.start()
        payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        await self._body(f"event: {name}\ndata: {payload}\n\n".encode())


def wants_event_stream(accept: str) -> bool:
    return any(part.split(";")[0].strip() == "text/event-stream" for part in accept.split(","))
