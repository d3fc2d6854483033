"""``SessionMiddleware(autoload=False)``: the record is read on first use, and a request that
never uses its session never reaches the store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Collection, Mapping

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sessions import (
    RedisSessionStore,
    Session,
    SessionMiddleware,
    SessionNotLoaded,
    SessionStore,
    StoreUnavailable,
)
from sessions.signing import CookieSigner

from .app import COOKIE, SECRET, client_for, cookie_value, make_app, session_of


class NoCalls(SessionStore):
    """A store that fails the test on any call."""

    async def load(self, session_id: str) -> dict[str, str] | None:
        raise AssertionError("load")

    async def save(
        self,
        session_id: str,
        changed: Mapping[str, str],
        deleted: Collection[str],
        *,
        create: bool = True,
    ) -> None:
        raise AssertionError("save")

    async def delete(self, session_id: str) -> None:
        raise AssertionError("delete")

    async def acquire_lock(self, session_id: str, name: str, ttl: float) -> str | None:
        raise AssertionError("acquire_lock")

    async def renew_lock(self, session_id: str, name: str, token: str, ttl: float) -> bool:
        raise AssertionError("renew_lock")

    async def release_lock(self, session_id: str, name: str, token: str) -> bool:
        raise AssertionError("release_lock")

    async def ping(self) -> None:
        raise AssertionError("ping")


class CountingLoads(RedisSessionStore):
    loads = 0

    async def load(self, session_id: str) -> dict[str, str] | None:
        self.loads += 1
        return await super().load(session_id)


@pytest.fixture
async def lazy(store: RedisSessionStore) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(make_app(store, autoload=False)) as client:
        yield client


def signed_cookie(session_id: str = "some-id") -> dict[str, str]:
    return {"cookie": f"{COOKIE}={CookieSigner(SECRET).sign(session_id)}"}


@pytest.mark.parametrize("headers", [{}, signed_cookie()], ids=["no cookie", "cookie"])
async def test_a_request_that_never_loads_makes_no_store_call(headers: dict[str, str]) -> None:
    async with client_for(make_app(NoCalls(), autoload=False)) as client:
        response = await client.get("/untouched", headers=headers)
    assert response.status_code == 200
    assert "set-cookie" not in response.headers


async def test_an_outage_only_fails_requests_that_load(unreachable_redis: Redis) -> None:
    app = make_app(RedisSessionStore(unreachable_redis), autoload=False)
    async with client_for(app) as client:
        assert (await client.get("/untouched", headers=signed_cookie())).status_code == 200
        with pytest.raises(StoreUnavailable):
            await client.get("/", headers=signed_cookie())
    await unreachable_redis.aclose()


async def test_sessions_loaded_on_first_use_behave_as_autoloaded_ones(
    lazy: httpx.AsyncClient, store: RedisSessionStore
) -> None:
    first = await lazy.post("/write", json={"name": "ada"})
    assert cookie_value(first) is not None
    assert (await lazy.get("/")).json() == {"id": first.json()["id"], "data": {"name": "ada"}}
    assert cookie_value(await lazy.get("/untouched")) is None
    cleared = await lazy.post("/clear")
    assert "Max-Age=0" in cleared.headers["set-cookie"]
    assert await store.load(first.json()["id"]) is None


async def test_load_reads_the_record_once(redis: Redis) -> None:
    store = CountingLoads(redis)
    seed = Session(store)
    seed.get_session()["a"] = 1
    await seed.save_session()
    session = Session.unloaded(store, seed.get_session_id())
    await asyncio.gather(session.load(), session.load())
    await session.load()
    assert store.loads == 1
    assert session.get_session() == {"a": 1}
    assert not session.is_new


async def test_an_unknown_id_loads_as_a_new_session(store: RedisSessionStore) -> None:
    session = Session.unloaded(store, "unknown-id")
    await session.load()
    assert session.is_new
    assert session.get_session_id() != "unknown-id"


async def test_a_failed_load_leaves_the_handle_unloaded(unreachable_redis: Redis) -> None:
    session = Session.unloaded(RedisSessionStore(unreachable_redis), "some-id")
    with pytest.raises(StoreUnavailable):
        await session.load()
    assert not session.loaded
    await unreachable_redis.aclose()


async def test_using_the_session_before_loading_it_says_what_to_do() -> None:
    failures: list[str] = []

    async def endpoint(request: Request) -> JSONResponse:
        session = session_of(request)
        uses: list[Callable[[], object]] = [
            session.get_session,
            session.get_session_id,
            lambda: session.is_new,
            lambda: request.session["user"],
            lambda: "user" in request.session,
        ]
        for use in uses:
            with pytest.raises(SessionNotLoaded) as caught:
                use()
            failures.append(str(caught.value))
        return JSONResponse({})

    app = Starlette(routes=[Route("/", endpoint)])
    async with client_for(SessionMiddleware(app, NoCalls(), SECRET, autoload=False)) as client:
        assert (await client.get("/", headers=signed_cookie())).status_code == 200
    assert len(failures) == 5
    for message in failures:
        assert "await request.state.session.load()" in message
        assert "autoload=True" in message
