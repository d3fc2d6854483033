"""A stored value that cannot be read whole is absent and logged, never a 500 on every request;
the next save of its key replaces it whole. Damage is made on real Redis with a raw client, as
a failover or another app version would leave it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sessions import RedisSessionStore, Session, SessionMiddleware
from sessions.serializer import SEGMENT_SEPARATOR

from .app import COOKIE, SECRET, client_for, session_of
from .test_segmented import Log

pytestmark = pytest.mark.redis


async def show(request: Request) -> JSONResponse:
    data = session_of(request).get_session()
    log = data.get("log")
    return JSONResponse(
        {
            "id": session_of(request).get_session_id(),
            "has_log": "log" in data,
            "entries": None if log is None else log.entries,
            "keys": sorted(data),
        }
    )


async def write_log(request: Request) -> JSONResponse:
    session_of(request).get_session()["log"] = Log(entries=await request.json())
    return await show(request)


async def write_other(request: Request) -> JSONResponse:
    session_of(request).get_session()["other"] = await request.json()
    return await show(request)


@pytest.fixture
def store(real_redis: Redis) -> RedisSessionStore:
    return RedisSessionStore(real_redis)


@pytest.fixture
async def client(store: RedisSessionStore) -> AsyncIterator[httpx.AsyncClient]:
    routes = [
        Route("/", show),
        Route("/log", write_log, methods=["POST"]),
        Route("/other", write_other, methods=["POST"]),
    ]
    app = SessionMiddleware(Starlette(routes=routes), store, SECRET)
    async with client_for(app) as client:
        yield client


def field(key: str, index: int | None = None) -> str:
    """The Redis hash field of a session key, or of one of its segments."""
    return "d:" + (key if index is None else f"{key}{SEGMENT_SEPARATOR}{index}")


async def test_a_value_missing_segments_is_absent_until_a_save_replaces_it_whole(
    client: httpx.AsyncClient,
    store: RedisSessionStore,
    real_redis: Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await client.post("/other", json="kept")
    session_id = (await client.post("/log", json=[{"n": n} for n in range(6)])).json()["id"]
    key = store.key(session_id)
    await real_redis.hdel(key, field("log", 2), field("log", 4))

    for _ in range(2):
        response = await client.get("/")
        assert response.status_code == 200
        assert response.json() == {
            "id": session_id,
            "has_log": False,
            "entries": None,
            "keys": ["other"],
        }
    warnings = [r for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(warnings) == 2  # once per request
    assert session_id not in caplog.text
    assert client.cookies[COOKIE] not in caplog.text

    await client.post("/log", json=[{"n": "new"}])
    stored = set(await real_redis.hkeys(key))
    assert stored == {
        b"created",
        *(f.encode() for f in (field("other"), field("log"), field("log", 0))),
    }
    assert (await client.get("/")).json()["entries"] == [{"n": "new"}]


@pytest.mark.parametrize(
    "text",
    ['{"__type__":"tests.NotRegistered","data":{}}', "{not json", '{"__type__":"tests.Log"'],
    ids=["unregistered type", "not JSON", "truncated"],
)
async def test_an_unreadable_value_is_absent_and_left_as_it_is(
    client: httpx.AsyncClient,
    store: RedisSessionStore,
    real_redis: Redis,
    caplog: pytest.LogCaptureFixture,
    text: str,
) -> None:
    session_id = (await client.post("/other", json=1)).json()["id"]
    await real_redis.hset(store.key(session_id), field("log"), text)
    response = await client.post("/other", json=2)
    assert response.status_code == 200
    assert response.json()["has_log"] is False
    assert "'log' cannot be read" in caplog.text
    # Another version of the app may know the type: nothing but a new value replaces it.
    assert await real_redis.hget(store.key(session_id), field("log")) == text.encode()
    await client.post("/log", json=[])
    assert (await client.get("/")).json()["entries"] == []


async def test_a_changed_head_rewrites_every_segment(
    store: RedisSessionStore, real_redis: Redis
) -> None:
    creator = Session(store)
    creator.get_session()["log"] = Log(entries=[{"n": n} for n in range(4)])
    await creator.save_session()
    session_id = creator.get_session_id()
    session = Session(store, session_id, await store.load(session_id))
    log = session.get_session()["log"]
    await real_redis.hdel(store.key(session_id), field("log", 1))  # lost after it was read
    log.title = "renamed"
    await session.save_session()
    assert Session(store, session_id, await store.load(session_id)).get_session()["log"] == log
