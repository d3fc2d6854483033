"""Wire formats of a chat stream: plain UTF-8 text deltas, or server-sent events.

A writer owns the ``send`` of one response and implements
:class:`~chatstream.chat.sink.ReplySink`. It starts the response lazily, so a request that is
refused before anything was sent still gets a proper status code and JSON error. ``headers``
are what the endpoint set on the response (cookies, custom headers): they go out with the
stream or with the error alike; the writer adds its own content type and stream headers.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Send

from ..chat.sink import ClientGone
from ..errors import ChatStreamError
from ..replies.hub import ReplyEvent
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
        self._complete = False

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

    async def queued(self, position: int, eta_s: float | None = None) -> None:
        """Plain text has no queue events: the response starts once generation does."""

    async def keep_alive(self) -> None:
        """Nothing to send before the response starts."""

    async def delta(self, text: str) -> None:
        await self.start()
        await self._body(text.encode())

    async def done(self, summary: dict[str, Any]) -> None:
        """The body's end is the reply's end."""

    async def event(self, event: ReplyEvent) -> None:
        """A reply's numbered event (as a follower reads it): here, its text."""
        if event.name == "delta":
            await self.delta(event.data["text"])

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
        self._complete = True
        await self._emit({"type": "http.response.body", "body": bytes(response.body)})

    async def end(self) -> None:
        if self._complete:
            return
        await self.start()
        self._complete = True
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
    comment lines as keep-alives while the request waits in the queue. A chat reply's events
    carry ``id: <n>`` (1, 2, …); ``queued`` events and keep-alives carry none."""

    media_type = "text/event-stream; charset=utf-8"

    async def queued(self, position: int, eta_s: float | None = None) -> None:
        data: dict[str, Any] = {"position": position}
        if eta_s is not None:
            data["eta_s"] = eta_s
        await self._event("queued", data)

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

    async def event(self, event: ReplyEvent) -> None:
        """A reply's numbered event, with its ``id:`` (what ``Last-Event-ID`` resumes after)."""
        await self._event(event.name, event.data, event.id)

    async def _event(self, name: str, data: dict[str, Any], event_id: int | None = None) -> None:
        await self.start()
        payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        head = f"id: {event_id}\n" if event_id is not None else ""
        await self._body(f"{head}event: {name}\ndata: {payload}\n\n".encode())


def wants_event_stream(accept: str) -> bool:
    return any(part.split(";")[0].strip() == "text/event-stream" for part in accept.split(","))


def writer_for(request: Request, message_id: str) -> Callable[[Send, RawHeaders], TextStreamWriter]:
    """The wire format the request asks for: server-sent events, else plain text."""
    sse = wants_event_stream(request.headers.get("accept", ""))
    return functools.partial(EventStreamWriter if sse else TextStreamWriter, message_id=message_id)
