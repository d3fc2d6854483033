"""``Session.provide``: a value the app shows under a session key for one request, kept elsewhere
(chatstream shows a conversation from its own store this way)."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sessions import RedisSessionStore, Session, SessionMiddleware

from .app import SECRET, client_for, session_of
from .test_handle import RecordingStore


@pytest.fixture
def recording(redis: Redis) -> RecordingStore:
    return RecordingStore(redis)


async def test_a_provided_value_is_seen_but_never_stored(recording: RecordingStore) -> None:
    session = Session(recording)
    session.provide("prompt", {"turns": 3})
    data = session.get_session()
    assert data["prompt"] == {"turns": 3}
    assert "prompt" in data
    assert dict(data) == {"prompt": {"turns": 3}}
    assert not session.has_data
    await session.save_session()
    assert recording.saves == []


async def test_assigning_the_key_stores_a_value_in_its_place(recording: RecordingStore) -> None:
    session = Session(recording)
    session.provide("prompt", "provided")
    session.get_session()["prompt"] = "assigned"
    assert session.has_data
    await session.save_session()
    assert recording.saves == [({"prompt": '"assigned"'}, [])]


async def test_a_provided_value_shadows_a_stored_one_until_deleted(
    store: RedisSessionStore,
) -> None:
    creator = Session(store)
    creator.get_session()["prompt"] = "stored"
    await creator.save_session()
    session_id = creator.get_session_id()
    session = Session(store, session_id, await store.load(session_id))
    session.provide("prompt", "provided")
    data = session.get_session()
    assert data["prompt"] == "provided"
    await session.save_session()
    assert await store.load(session_id) == {"prompt": '"stored"'}
    del data["prompt"]
    assert "prompt" not in data
    await session.save_session()
    assert await store.load(session_id) == {}


async def test_provided_values_may_come_before_loading(store: RedisSessionStore) -> None:
    session = Session.unloaded(store, None)
    session.provide("prompt", "provided")
    await session.load()
    assert session.get_session()["prompt"] == "provided"


def test_provided_keys_follow_the_rules_of_stored_ones(store: RedisSessionStore) -> None:
    with pytest.raises(TypeError, match="strings"):
        Session(store).provide(1, "one")  # type: ignore[arg-type]


async def test_a_provided_value_lasts_one_request_and_sets_no_cookie(
    store: RedisSessionStore, redis: Redis
) -> None:
    async def provide(request: Request) -> JSONResponse:
        session = session_of(request)
        session.provide("prompt", "provided")
        return JSONResponse({"session": dict(request.session)})

    async def show(request: Request) -> JSONResponse:
        return JSONResponse({"session": dict(request.session)})

    routes = [Route("/provide", provide), Route("/show", show)]
    app = SessionMiddleware(Starlette(routes=routes), store, SECRET)
    async with client_for(app) as client:
        provided = await client.get("/provide")
        assert provided.json() == {"session": {"prompt": "provided"}}
        assert "set-cookie" not in provided.headers
        assert (await client.get("/show")).json() == {"session": {}}
    assert await redis.dbsize() == 0
