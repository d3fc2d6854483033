"""``request.session`` runs on the server-side session, so code written for Starlette's
``SessionMiddleware`` (here Authlib's OAuth client) works unchanged."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlencode

import httpx
import pytest
import uvicorn
from authlib.integrations.starlette_client import OAuth
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
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


# -- Authlib's Starlette OAuth client against a fake OAuth2 provider on loopback ---------------


def fake_provider() -> Starlette:
    """Authorizes everyone as ``ada``: a code for the redirect, a token for the code."""
    codes: set[str] = set()

    async def authorize(request: Request) -> Response:
        code = secrets.token_urlsafe(8)
        codes.add(code)
        query = urlencode({"code": code, "state": request.query_params["state"]})
        return RedirectResponse(f"{request.query_params['redirect_uri']}?{query}")

    async def token(request: Request) -> JSONResponse:
        (code,) = parse_qs((await request.body()).decode())["code"]
        if code not in codes:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        return JSONResponse({"access_token": "token-of-ada", "token_type": "Bearer"})

    async def userinfo(request: Request) -> JSONResponse:
        assert request.headers["authorization"] == "Bearer token-of-ada"
        return JSONResponse({"sub": "ada", "name": "Ada Lovelace"})

    return Starlette(
        routes=[
            Route("/authorize", authorize),
            Route("/token", token, methods=["POST"]),
            Route("/userinfo", userinfo),
        ]
    )


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[str]:
    """``app`` served by uvicorn on a loopback port, on this event loop; its base URL.

    The socket listens before the server starts, so requests queue until it accepts them."""
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    config = uvicorn.Config(app, lifespan="off", ws="none", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        yield f"http://127.0.0.1:{listening.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        listening.close()


def signing_in_app(provider: str, store: RedisSessionStore) -> SessionMiddleware:
    oauth = OAuth()
    oauth.register(
        "fake",
        client_id="chat-app",
        client_secret="chat-app-secret",
        authorize_url=f"{provider}/authorize",
        access_token_url=f"{provider}/token",
        api_base_url=f"{provider}/",
    )

    async def login(request: Request) -> Response:
        response: Response = await oauth.fake.authorize_redirect(
            request, request.url_for("callback")
        )
        return response

    async def callback(request: Request) -> JSONResponse:
        token = await oauth.fake.authorize_access_token(request)
        user = (await oauth.fake.get("userinfo", token=token)).json()
        request.session["user"] = user
        return JSONResponse(user)

    async def me(request: Request) -> JSONResponse:
        return JSONResponse(request.session.get("user"))

    routes = [
        Route("/login", login),
        Route("/callback", callback, name="callback"),
        Route("/me", me),
    ]
    return SessionMiddleware(Starlette(routes=routes), store, SECRET)


@pytest.mark.redis
async def test_authlib_signs_in_with_the_user_kept_server_side(real_redis: Redis) -> None:
    store = RedisSessionStore(real_redis)
    async with (
        serving(fake_provider()) as provider,
        client_for(signing_in_app(provider, store)) as browser,
        httpx.AsyncClient() as to_provider,
    ):
        to_login = await browser.get("/login")
        assert to_login.status_code == 302
        to_callback = await to_provider.get(to_login.headers["location"])
        assert to_callback.status_code == 307
        signed_in = await browser.get(to_callback.headers["location"])
        assert signed_in.status_code == 200
        assert (await browser.get("/me")).json() == {"sub": "ada", "name": "Ada Lovelace"}
        cookie = browser.cookies[COOKIE]
    assert "Ada" not in cookie
    session_id = CookieSigner(SECRET).unsign(cookie)
    assert session_id is not None
    stored = await store.load(session_id)
    assert stored is not None
    assert stored["user"] == '{"sub":"ada","name":"Ada Lovelace"}'
    assert not [key for key in stored if key.startswith("_state_")]  # Authlib cleaned up
