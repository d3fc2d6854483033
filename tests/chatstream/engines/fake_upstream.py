"""A tiny OpenAI-compatible server on loopback, in the test's event loop, for the remote engine.

It streams a scripted reply as a server on the tiny byte-level tokenizer would: one token per
UTF-8 byte, one ``chat.completion.chunk`` per whole character, ``max_tokens`` honoured, stop
strings ignored (as ``transformers serve`` does), the usage in a chunk of its own when asked
for, then ``data: [DONE]``. It records each request's body, counts its decoding steps, and
sets :attr:`FakeUpstream.disconnected` when a client leaves in the middle of a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Awaitable
from typing import Any

MODEL = "fake-model"


class FakeUpstream:
    """Serves ``reply`` at one token per ``step_delay`` seconds.

    ``fail_at_step``: that step sends an error object instead of a token. ``usage``: whether
    it reports usage (``prompt_tokens`` as the prompt's). ``status``: answer every completion
    with that status and a JSON error instead; ``body``: send that (as an event stream) instead
    of a completion, and end it once ``linger`` is set, if given. It listens from construction
    on (the socket is bound and listening), so a synchronous test helper can make one;
    :meth:`close` stops it.
    """

    def __init__(
        self,
        reply: str = "Hello!",
        *,
        step_delay: float = 0.0,
        fail_at_step: int | None = None,
        usage: bool = True,
        prompt_tokens: int = 0,
        status: int = 200,
        body: bytes | None = None,
        linger: asyncio.Event | None = None,
    ) -> None:
        self.reply = reply
        self.step_delay = step_delay
        self.fail_at_step = fail_at_step
        self.usage = usage
        self.prompt_tokens = prompt_tokens
        self.status = status
        self.body = body
        self.linger = linger
        self.steps = 0
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.disconnected = asyncio.Event()
        self.first_token_sent = asyncio.Event()
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self._server = asyncio.ensure_future(asyncio.start_server(self._handle, sock=self._socket))
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def close(self) -> None:
        """Stop listening and end every open connection (idempotent)."""
        server = await self._server
        server.close()
        for handler in list(self._handlers):
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            request_line, *header_lines = head.split("\r\n")
            pairs = (line.split(": ", 1) for line in header_lines if ": " in line)
            headers = {name.lower(): value for name, value in pairs}
            body = await reader.readexactly(int(headers.get("content-length", 0)))
            method, path, _ = request_line.split(" ")
            self.headers.append(headers)
            if (method, path) == ("GET", "/v1/models"):
                await _respond(writer, 200, "application/json", _models())
            elif (method, path) == ("POST", "/v1/chat/completions"):
                self.requests.append(json.loads(body))
                await self._complete(reader, writer, self.requests[-1])
            else:
                await _respond(writer, 404, "application/json", b'{"error": "no such route"}')
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _complete(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: dict[str, Any]
    ) -> None:
        if self.status != 200:
            error = {"error": {"message": "scripted status", "code": self.status}}
            await _respond(writer, self.status, "application/json", json.dumps(error).encode())
            return
        if self.body is not None:
            await _respond(writer, 200, "text/event-stream", self.body)
            if self.linger is not None:
                await self._unless_left(reader, self.linger.wait())
            return
        writer.write(_head(200, "text/event-stream"))
        await self._unless_left(reader, self._stream(writer, request))

    async def _unless_left(self, reader: asyncio.StreamReader, work: Awaitable[Any]) -> None:
        """Do ``work`` until it ends or the client closes its end (:attr:`disconnected`)."""
        left = asyncio.create_task(reader.read())  # b"" once the client closes its end
        task = asyncio.ensure_future(work)
        try:
            done, _ = await asyncio.wait({left, task}, return_when=asyncio.FIRST_COMPLETED)
            if left in done:
                self.disconnected.set()
        finally:
            for pending in (left, task):
                pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task

    async def _stream(self, writer: asyncio.StreamWriter, request: dict[str, Any]) -> None:
        tokens = self.reply.encode()
        pending = b""
        generated = 0
        finish = "stop"
        for step, token in enumerate(tokens):
            if step == request.get("max_tokens"):
                finish = "length"
                break
            await asyncio.sleep(self.step_delay)
            self.steps += 1
            if step == self.fail_at_step:
                await _send(writer, {"error": {"message": f"scripted failure at step {step}"}})
                return
            generated += 1
            pending += bytes([token])
            with contextlib.suppress(UnicodeDecodeError):
                await _send(writer, _chunk({"content": pending.decode()}))
                pending = b""
                self.first_token_sent.set()
        await _send(writer, _chunk({}, finish))
        if self.usage and (request.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": self.prompt_tokens, "completion_tokens": generated}
            await _send(writer, {"object": "chat.completion.chunk", "choices": [], "usage": usage})
        writer.write(b"data: [DONE]\n\n")
        await writer.drain()


def _chunk(delta: dict[str, str], finish_reason: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    return {"object": "chat.completion.chunk", "model": MODEL, "choices": [choice]}


def _models() -> bytes:
    return json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()


async def _send(writer: asyncio.StreamWriter, payload: dict[str, Any]) -> None:
    writer.write(f"data: {json.dumps(payload)}\n\n".encode())
    await writer.drain()


def _head(status: int, content_type: str) -> bytes:
    # Connection: close, and the body runs to the end of the connection.
    return (
        f"HTTP/1.1 {status} Scripted\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n"
    ).encode()


async def _respond(
    writer: asyncio.StreamWriter, status: int, content_type: str, body: bytes
) -> None:
    writer.write(_head(status, content_type) + body)
    await writer.drain()
