"""Driving an ASGI app by hand, for tests about clients that leave."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message


@dataclass
class ManualRequest:
    """One request (a POST of ``payload``, or a GET when ``method`` says so) whose client
    leaves when ``leave`` is set, or right after the first body bytes reach it with
    ``leave_at_first_byte``; ``headers`` are added to it."""

    app: ASGIApp
    path: str
    payload: dict[str, Any]
    cookie: str | None = None
    accept: str = "*/*"
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    leave_at_first_byte: bool = False
    stall_body: bool = False  # the body never comes (until the client leaves)
    leave: asyncio.Event = field(default_factory=asyncio.Event)
    sent: list[Message] = field(default_factory=list)
    first_body: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        body = json.dumps(self.payload).encode() if self.method == "POST" else b""
        headers = [(b"accept", self.accept.encode())]
        if body:
            headers.append((b"content-type", b"application/json"))
        if self.cookie:
            headers.append((b"cookie", self.cookie.encode()))
        headers += [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": self.method,
            "scheme": "http",
            "path": self.path.partition("?")[0],
            "raw_path": self.path.partition("?")[0].encode(),
            "query_string": self.path.partition("?")[2].encode(),
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 5000),
            "server": ("testserver", 80),
            "state": {},
        }
        request_sent = False

        async def receive() -> Message:
            nonlocal request_sent
            if not request_sent and not self.stall_body:
                request_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await self.leave.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if self.leave.is_set():
                raise OSError("the client has left")
            self.sent.append(message)
            if message["type"] == "http.response.start":
                self.started.set()
            elif message.get("body"):
                self.first_body.set()
                if self.leave_at_first_byte:
                    self.leave.set()

        await self.app(scope, receive, send)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        return int(starts[0]["status"]) if starts else None

    @property
    def text(self) -> str:
        return b"".join(
            m.get("body", b"") for m in self.sent if m["type"] == "http.response.body"
        ).decode()
