"""A new visitor's cookie names a stored session, so it sticks; first requests in flight together
(a page loading while a turn starts) end on one session."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sessions import RedisSessionStore, SessionMiddleware
from sessions.handle import new_session_id
from sessions.signing import CookieSigner

from .app import COOKIE, SECRET, client_for, cookie_value, loaded


async def test_a_new_session_that_is_only_read_sends_no_cookie(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    response = await client.get("/")
    assert response.json()["data"] == {}
    assert "set-cookie" not in response.headers
    assert await redis.dbsize() == 0


@pytest.mark.parametrize("autoload", [True, False])
@pytest.mark.parametrize("stale_cookie", [False, True], ids=["no cookie", "stale cookie"])
async def test_concurrent_first_requests_end_on_one_session(
    store: RedisSessionStore, autoload: bool, stale_cookie: bool
) -> None:
    """The reader answers last, so whatever cookie it sent would be the one the client keeps."""
    both_in_flight = asyncio.Barrier(2)
    reader_may_answer = asyncio.Event()

    async def page(request: Request) -> JSONResponse:
        data = dict((await loaded(request)).get_session())
        await both_in_flight.wait()
        await reader_may_answer.wait()
        return JSONResponse(data)

    async def turn(request: Request) -> JSONResponse:
        (await loaded(request)).get_session()["turn"] = 1
        await both_in_flight.wait()
        return JSONResponse({})

    async def show(request: Request) -> JSONResponse:
        return JSONResponse(dict((await loaded(request)).get_session()))

    routes = [Route("/page", page), Route("/turn", turn, methods=["POST"]), Route("/show", show)]
    app = SessionMiddleware(Starlette(routes=routes), store, SECRET, autoload=autoload)
    async with client_for(app) as client:
        if stale_cookie:
            stale = CookieSigner(SECRET).sign(new_session_id())
            client.cookies.set(COOKIE, stale, domain="testserver.local")
        loading = asyncio.create_task(client.get("/page"))
        turn_response = await client.post("/turn")
        reader_may_answer.set()
        page_response = await loading
        assert cookie_value(turn_response) is not None
        assert "set-cookie" not in page_response.headers
        assert len(client.cookies) == 1
        assert (await client.get("/show")).json() == {"turn": 1}


async def test_a_live_session_that_is_only_read_keeps_its_cookie(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/write", json={"a": 1})
    response = await client.get("/")
    assert "set-cookie" not in response.headers
    assert response.json()["data"] == {"a": 1}
