"""A tiny app that exposes its session, for tests of the middleware.

Its routes load the session themselves, so they work with ``autoload`` on and off alike."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from sessions import Session, SessionMiddleware, SessionStore
from sessions.types import ASGIApp, Message, Receive, Scope

SECRET = "test-secret"
COOKIE = "session"


def session_of(request: Request) -> Session:
    session: Session = request.state.session
    return session


async def loaded(request: Request) -> Session:
    session = session_of(request)
    await session.load()
    return session


async def read(request: Request) -> JSONResponse:
    session = await loaded(request)
    return JSONResponse({"id": session.get_session_id(), "data": dict(session.get_session())})


async def write(request: Request) -> JSONResponse:
    (await loaded(request)).get_session().update(await request.json())
    return await read(request)


async def rotate(request: Request) -> JSONResponse:
    await (await loaded(request)).rotate()
    return await read(request)


async def clear(request: Request) -> JSONResponse:
    await (await loaded(request)).clear_session()
    return JSONResponse({})


async def untouched(request: Request) -> Response:
    return PlainTextResponse("ok")


async def stream(request: Request) -> StreamingResponse:
    """Sets ``started`` before the response starts (so a new session gets its cookie) and
    ``streamed`` only after the headers and a first chunk went out."""
    data = (await loaded(request)).get_session()
    data["started"] = True

    async def body() -> AsyncIterator[bytes]:
        yield b"first "
        data["streamed"] = True
        yield b"last"

    return StreamingResponse(body())


def make_app(store: SessionStore, **options: Any) -> Starlette:
    routes = [
        Route("/", read),
        Route("/write", write, methods=["POST"]),
        Route("/rotate", rotate, methods=["POST"]),
        Route("/clear", clear, methods=["POST"]),
        Route("/untouched", untouched),
        Route("/stream", stream),
    ]
    options.setdefault("secret_key", SECRET)
    middleware = [Middleware(SessionMiddleware, store=store, **options)]
    return Starlette(routes=routes, middleware=middleware)


def client_for(app: ASGIApp, base_url: str = "http://testserver") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


def http_scope(path: str = "/", headers: list[tuple[bytes, bytes]] | None = None) -> Scope:
    """What a server passes for ``GET path``; old enough ASGI that responses watch receive()."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers or [],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }


def one_request(disconnect: asyncio.Event | None = None) -> Receive:
    """A ``receive``: the request, then ``http.disconnect`` once ``disconnect`` is set."""
    received = False

    async def receive() -> Message:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await (disconnect or asyncio.Event()).wait()
        return {"type": "http.disconnect"}

    return receive


@dataclass
class Sent:
    """A ``send`` that keeps what the app sent."""

    messages: list[Message] = field(default_factory=list)

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)


def cookie_value(response: httpx.Response, cookie: str = COOKIE) -> str | None:
    """The value ``response`` sets the cookie ``cookie`` to, if it sets it."""
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name == cookie:
            return rest.split(";")[0]
    return None


def unused_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
