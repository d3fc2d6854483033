"""What a client can do with the cookie: tamper, forge, replay, fixate, or send garbage."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from redis.asyncio import Redis

from sessions import RedisSessionStore
from sessions.handle import new_session_id
from sessions.signing import CookieSigner

from .app import (
    COOKIE,
    SECRET,
    Sent,
    client_for,
    cookie_value,
    http_scope,
    make_app,
    one_request,
)


async def new_id_for(client: httpx.AsyncClient, cookie: str) -> str:
    """Write through ``cookie``; return the id the session ends up with."""
    client.cookies.set(COOKIE, cookie)
    response = await client.post("/write", json={"mine": True})
    assert response.status_code == 200
    return str(response.json()["id"])


async def existing_session(client: httpx.AsyncClient) -> tuple[str, str]:
    response = await client.post("/write", json={"secret": "s3cr3t"})
    value = cookie_value(response)
    assert value is not None
    return response.json()["id"], value


async def test_a_tampered_cookie_starts_a_new_session(
    client: httpx.AsyncClient, store: RedisSessionStore
) -> None:
    session_id, value = await existing_session(client)
    tampered = value[:-3] + ("xxx" if not value.endswith("xxx") else "yyy")
    assert await new_id_for(client, tampered) != session_id
    assert await store.load(session_id) == {"secret": '"s3cr3t"'}


async def test_an_expired_cookie_starts_a_new_session(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    session_id, _ = await existing_session(client)
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: 1_000_000.0)
        expired = CookieSigner(SECRET).sign(session_id)
    assert await new_id_for(client, expired) != session_id


async def test_a_cookie_signed_with_an_unknown_key_starts_a_new_session(
    client: httpx.AsyncClient,
) -> None:
    session_id, _ = await existing_session(client)
    forged = CookieSigner("guessed-key").sign(session_id)
    assert await new_id_for(client, forged) != session_id


async def test_an_oversized_cookie_starts_a_new_session(client: httpx.AsyncClient) -> None:
    session_id, value = await existing_session(client)
    assert await new_id_for(client, value + "A" * 5000) != session_id


async def test_a_validly_signed_but_unknown_id_is_never_adopted(
    client: httpx.AsyncClient, store: RedisSessionStore
) -> None:
    chosen = new_session_id()
    session_id = await new_id_for(client, CookieSigner(SECRET).sign(chosen))
    assert session_id != chosen
    assert await store.load(chosen) is None
    assert await store.load(session_id) == {"mine": "true"}


async def test_an_expired_session_is_replaced_not_revived(
    client: httpx.AsyncClient, store: RedisSessionStore
) -> None:
    session_id, value = await existing_session(client)
    await store.delete(session_id)
    assert await new_id_for(client, value) != session_id
    assert await store.load(session_id) is None


async def test_rotated_keys_still_verify_and_new_cookies_use_the_newest(
    store: RedisSessionStore,
) -> None:
    async with client_for(make_app(store, secret_key="old")) as client:
        session_id, _ = await existing_session(client)
    async with client_for(make_app(store, secret_key=["new", "old"])) as client:
        client.cookies.set(COOKIE, CookieSigner("old").sign(session_id))
        assert (await client.get("/")).json()["id"] == session_id
        rotated = cookie_value(await client.post("/rotate"))
    assert rotated is not None
    assert CookieSigner("new").unsign(rotated) is not None
    assert CookieSigner("old").unsign(rotated) is None


@pytest.mark.parametrize(
    "cookie_header",
    [
        b"",
        b";;;==;",
        b"=",
        COOKIE.encode(),
        COOKIE.encode() + b"=",
        COOKIE.encode() + b"=..",
        COOKIE.encode() + b"=a.b.c",
        COOKIE.encode() + b"=" + b"A" * 43 + b".!!!!.$$$$",
        COOKIE.encode() + b'="quoted.value"',
        COOKIE.encode() + b"=%00%ff",
        COOKIE.encode() + b"=\xff\xfe\x00\x01",
        COOKIE.encode() + b"=" + b"A" * 100_000,
        COOKIE.encode() + b"=a; " + COOKIE.encode() + b"=b",
        b"\x00\x01\x02",
        "ünïcødé=✓".encode(),
        b"a=1; " * 1000,
    ],
)
async def test_garbage_cookie_headers_never_break_the_app(
    store: RedisSessionStore, cookie_header: bytes
) -> None:
    app = make_app(store)
    sent = Sent()
    for path in ("/", "/untouched"):
        await app(http_scope(path, [(b"cookie", cookie_header)]), one_request(), sent)
    assert [message["status"] for message in sent.messages if "status" in message] == [200, 200]


@pytest.mark.redis
async def test_concurrent_requests_changing_different_keys_lose_nothing(
    real_redis: Redis,
) -> None:
    both_loaded = asyncio.Barrier(2)
    store = RedisSessionStore(real_redis)

    class WaitForBoth(RedisSessionStore):
        async def load(self, session_id: str) -> dict[str, str] | None:
            stored = await super().load(session_id)
            await both_loaded.wait()
            return stored

    async with client_for(make_app(store)) as client:
        await client.post("/write", json={"params": {"t": 0.5}, "history": []})
        racing = client_for(make_app(WaitForBoth(real_redis)))
        racing.cookies = client.cookies
        async with racing:
            await asyncio.gather(
                racing.post("/write", json={"params": {"t": 0.9}}),
                racing.post("/write", json={"history": ["hello"]}),
            )
        assert (await client.get("/")).json()["data"] == {
            "params": {"t": 0.9},
            "history": ["hello"],
        }
