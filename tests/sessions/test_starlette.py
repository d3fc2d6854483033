"""``request.session`` runs on the server-side session, so code written for Starlette's
``SessionMiddleware`` works unchanged."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sessions import RedisSessionStore, SessionMiddleware, SessionNotLoaded
from sessions.signing import CookieSigner

from .app import COOKIE, SECRET, client_for, session_of


async def test_request_session_reads_and_writes_the_server_side_session(
    store: RedisSessionStore,
) -> None:
    async def sign_in(request: Request) -> JSONResponse:
        request.session["user"] = {"name": "ada"}
        request.session.setdefault("visits", 0)
        return JSONResponse({})

    async def whoami(request: Request) -> JSONResponse:
        request.session["visits"] += 1
        stored = session_of(request).get_session()
        return JSONResponse({"user": stored["user"], "visits": request.session["visits"]})

    routes = [Route("/sign_in", sign_in, methods=["POST"]), Route("/whoami", whoami)]
    app = SessionMiddleware(Starlette(routes=routes), store, SECRET)
    async with client_for(app) as client:
        await client.post("/sign_in")
        assert (await client.get("/whoami")).json() == {"user": {"name": "ada"}, "visits": 1}
        cookie = client.cookies[COOKIE]
    session_id = CookieSigner(SECRET).unsign(cookie)
    assert session_id is not None
    assert await store.load(session_id) == {"user": '{"name":"ada"}', "visits": "1"}
    assert "ada" not in cookie


async def test_request_session_follows_clear_and_rotate(store: RedisSessionStore) -> None:
    async def endpoint(request: Request) -> JSONResponse:
        view = request.session
        view["a"] = 1
        await session_of(request).rotate()
        view["b"] = 2
        rotated = dict(view)
        await session_of(request).clear_session()
        return JSONResponse({"rotated": rotated, "cleared": dict(view)})

    app = SessionMiddleware(Starlette(routes=[Route("/", endpoint)]), store, SECRET)
    async with client_for(app) as client:
        assert (await client.get("/")).json() == {"rotated": {"a": 1, "b": 2}, "cleared": {}}


async def test_request_session_before_loading_raises_session_not_loaded(
    store: RedisSessionStore,
) -> None:
    async def endpoint(request: Request) -> JSONResponse:
        with pytest.raises(SessionNotLoaded):
            request.session.get("user")
        await session_of(request).load()
        request.session["user"] = "ada"
        return JSONResponse(dict(request.session))

    app = SessionMiddleware(Starlette(routes=[Route("/", endpoint)]), store, SECRET, autoload=False)
    async with client_for(app) as client:
        assert (await client.get("/")).json() == {"user": "ada"}
