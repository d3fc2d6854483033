from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from sessions import RedisSessionStore, SessionMiddleware, SessionStore, StoreUnavailable
from sessions.signing import CookieSigner
from sessions.types import Message, Receive, Scope, Send

from .app import (
    COOKIE,
    SECRET,
    Sent,
    client_for,
    cookie_value,
    http_scope,
    make_app,
    one_request,
    session_of,
)


async def test_values_round_trip_across_requests(client: httpx.AsyncClient) -> None:
    first = await client.post("/write", json={"name": "ada", "tags": ["x"]})
    assert cookie_value(first) is not None
    second = await client.get("/")
    assert second.json() == {"id": first.json()["id"], "data": {"name": "ada", "tags": ["x"]}}
    assert cookie_value(second) is None


async def test_requests_that_never_use_the_session_get_no_cookie(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    response = await client.get("/untouched")
    assert response.headers.get("set-cookie") is None
    assert await redis.dbsize() == 0


async def test_clients_do_not_see_each_others_sessions(store: RedisSessionStore) -> None:
    app = make_app(store)
    async with client_for(app) as alice, client_for(app) as bob:
        await alice.post("/write", json={"who": "alice"})
        await bob.post("/write", json={"who": "bob"})
        assert (await alice.get("/")).json()["data"] == {"who": "alice"}
        assert (await bob.get("/")).json()["data"] == {"who": "bob"}


async def test_default_cookie_attributes(client: httpx.AsyncClient) -> None:
    header = (await client.post("/write", json={"a": 1})).headers["set-cookie"]
    attributes = header.split("; ")[1:]
    assert attributes == ["Path=/", "HttpOnly", "SameSite=Lax", f"Max-Age={30 * 86400}"]


async def test_configured_cookie_attributes(store: RedisSessionStore) -> None:
    app = make_app(
        store,
        cookie_name="sid",
        same_site="strict",
        https_only=True,
        path="/app",
        domain="example.org",
    )
    async with client_for(app) as client:
        header = (await client.post("/write", json={"a": 1})).headers["set-cookie"]
    assert header.startswith("sid=")
    assert header.split("; ")[1:] == [
        "Path=/app",
        "HttpOnly",
        "SameSite=Strict",
        "Domain=example.org",
        f"Max-Age={30 * 86400}",
        "Secure",
    ]


@pytest.mark.parametrize(
    ("base_url", "trust", "forwarded", "secure"),
    [
        ("https://testserver", False, None, True),
        ("http://testserver", False, "https", False),
        ("http://testserver", True, "https", True),
        ("http://testserver", True, "HTTPS, http", True),
        ("http://testserver", True, "http", False),
    ],
)
async def test_cookies_are_secure_on_https(
    store: RedisSessionStore, base_url: str, trust: bool, forwarded: str | None, secure: bool
) -> None:
    headers = {"x-forwarded-proto": forwarded} if forwarded else {}
    app = make_app(store, trust_forwarded_proto=trust)
    async with client_for(app, base_url) as client:
        response = await client.post("/write", json={"a": 1}, headers=headers)
    assert response.headers["set-cookie"].endswith("; Secure") is secure


async def test_rotate_issues_a_new_id_with_the_same_data(
    client: httpx.AsyncClient, store: RedisSessionStore
) -> None:
    before = (await client.post("/write", json={"user": "ada"})).json()
    rotated = await client.post("/rotate")
    assert cookie_value(rotated) is not None
    assert rotated.json()["id"] != before["id"]
    assert (await client.get("/")).json() == rotated.json()
    assert await store.load(before["id"]) is None


async def test_clearing_deletes_the_data_and_expires_the_cookie(
    client: httpx.AsyncClient, store: RedisSessionStore
) -> None:
    session_id = (await client.post("/write", json={"a": 1})).json()["id"]
    cleared = await client.post("/clear")
    assert "Max-Age=0" in cleared.headers["set-cookie"]
    assert COOKIE not in client.cookies
    assert await store.load(session_id) is None
    assert (await client.get("/")).json()["data"] == {}


async def test_changes_made_while_streaming_are_kept(client: httpx.AsyncClient) -> None:
    streamed = await client.get("/stream")
    assert streamed.text == "first last"
    assert (await client.get("/")).json()["data"] == {"started": True, "streamed": True}


async def test_the_last_chunk_reaches_the_client_only_once_saved(
    store: RedisSessionStore,
) -> None:
    scope = http_scope("/stream")
    seen_at_end: list[dict[str, str] | None] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            session_id = scope["state"]["session"].get_session_id()
            seen_at_end.append(await store.load(session_id))

    await make_app(store)(scope, one_request(), send)
    assert seen_at_end == [{"started": "true", "streamed": "true"}]


async def test_changes_are_kept_when_the_client_disconnects(store: RedisSessionStore) -> None:
    started_streaming = asyncio.Event()
    session_ids: list[str] = []

    async def stream(request: Request) -> StreamingResponse:
        session = session_of(request)
        session_ids.append(session.get_session_id())
        data = session.get_session()
        data["progress"] = 0

        async def body() -> AsyncIterator[bytes]:
            data["progress"] = 1
            yield b"partial"
            started_streaming.set()
            data["progress"] = 2
            await asyncio.Event().wait()
            yield b"never sent"

        return StreamingResponse(body())

    app = SessionMiddleware(Starlette(routes=[Route("/", stream)]), store, SECRET)
    sent = Sent()
    await app(http_scope(), one_request(disconnect=started_streaming), sent)
    assert [message["type"] for message in sent.messages] == [
        "http.response.start",
        "http.response.body",
    ]
    assert await store.load(session_ids[0]) == {"progress": "2"}


async def test_changes_are_kept_when_the_app_raises(store: RedisSessionStore) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        session = scope["state"]["session"]
        session.get_session()["before_crash"] = True
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        raise RuntimeError("boom")

    scope = http_scope()
    with pytest.raises(RuntimeError, match="boom"):
        await SessionMiddleware(app, store, SECRET)(scope, one_request(), Sent())
    session_id = scope["state"]["session"].get_session_id()
    assert await store.load(session_id) == {"before_crash": "true"}


async def test_data_first_set_after_the_response_started_is_not_kept(
    store: RedisSessionStore, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    async def late(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"headers are out"
            session_of(request).get_session()["late"] = True

        return StreamingResponse(body())

    app = SessionMiddleware(Starlette(routes=[Route("/", late)]), store, SECRET)
    async with client_for(app) as client:
        response = await client.get("/")
    assert response.headers.get("set-cookie") is None
    assert await redis.dbsize() == 0
    assert "session data not kept" in caplog.text


async def test_a_failed_save_at_the_end_is_logged_not_raised(
    store: RedisSessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    class FailingSaves(RedisSessionStore):
        async def save(self, *args: object, **kwargs: object) -> None:
            raise StoreUnavailable("down")

    async with client_for(make_app(FailingSaves(store.redis))) as client:
        response = await client.get("/stream")
    assert response.status_code == 200
    assert response.text == "first last"
    assert "could not save session" in caplog.text


async def test_an_unreachable_store_answers_503(
    unreachable_redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    called = False

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal called
        called = True

    middleware = SessionMiddleware(app, RedisSessionStore(unreachable_redis), SECRET)
    cookie = f"{COOKIE}={CookieSigner(SECRET).sign('some-id')}"
    async with client_for(middleware) as client:
        response = await client.get("/", headers={"cookie": cookie})
    await unreachable_redis.aclose()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.json()["error"]["code"] == "store_unavailable"
    assert not called


async def test_other_scopes_pass_straight_through(store: SessionStore) -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)

    scope: Scope = {"type": "lifespan"}
    await SessionMiddleware(app, store, SECRET)(scope, one_request(), Sent())
    assert seen == [{"type": "lifespan"}]


async def test_fastapi_handlers_see_the_session(store: RedisSessionStore) -> None:
    from fastapi import FastAPI

    api = FastAPI()
    api.add_middleware(SessionMiddleware, store=store, secret_key=SECRET)

    @api.post("/count")
    async def count(request: Request) -> PlainTextResponse:
        data = request.state.session.get_session()
        data["count"] = data.get("count", 0) + 1
        return PlainTextResponse(str(data["count"]))

    async with client_for(api) as client:
        assert [(await client.post("/count")).text for _ in range(3)] == ["1", "2", "3"]
