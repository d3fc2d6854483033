"""Owners: a signed-in user keeps the same conversations on every device; a visitor's move to
them when the visitor signs in (the session id rotates); another user sees nothing; sessions of
the release before conversations keep theirs."""

from __future__ import annotations

import json
from typing import Any

import httpx
from fastapi import FastAPI
from redis.asyncio import Redis
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request

from chatstream import ChatPrompt, ChatStream, Message
from sessions import RedisSessionStore, SessionMiddleware, dumps

from ..conftest import SECRET, client_for
from ..scripted import ScriptedEngine


class SessionLogin(AuthenticationBackend):
    """The user named in the session (what a login route, or Authlib's callback, stores)."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        user = conn.session.get("user")
        return (AuthCredentials(["authenticated"]), SimpleUser(user)) if user else None


def signed_in_app(redis: Redis) -> FastAPI:
    chat_stream = ChatStream(engine=ScriptedEngine(), redis=redis)
    app = FastAPI()

    @app.post("/login")
    async def login(request: Request) -> dict[str, str]:
        request.session["user"] = (await request.json())["user"]
        return {"status": "signed in"}

    chat_stream.mount(app)
    app.add_middleware(AuthenticationMiddleware, backend=SessionLogin())
    app.add_middleware(SessionMiddleware, store=RedisSessionStore(redis), secret_key=SECRET)
    return app


async def titles(client: httpx.AsyncClient) -> list[str]:
    return [c["title"] for c in (await client.get("/conversations")).json()["conversations"]]


async def test_a_visitor_who_signs_in_keeps_everything_on_every_device(redis: Redis) -> None:
    app = signed_in_app(redis)
    async with client_for(app) as laptop, client_for(app) as phone, client_for(app) as bob:
        await laptop.post("/chat_stream", json={"user_input": "planning a trip"})
        assert await titles(laptop) == ["planning a trip"]
        visitor_cookie = laptop.cookies["session"]
        await laptop.post("/login", json={"user": "alice"})
        assert await titles(laptop) == ["planning a trip"]  # moved to alice, nothing lost
        assert laptop.cookies["session"] != visitor_cookie  # the session id rotated
        await phone.post("/login", json={"user": "alice"})
        assert await titles(phone) == ["planning a trip"]
        await phone.post("/chat_stream", json={"user_input": "from the phone"})
        assert await titles(laptop) == ["from the phone", "planning a trip"]
        await bob.post("/login", json={"user": "bob"})
        assert await titles(bob) == []
        assert (await bob.get("/get_prompt")).json()["messages"] == []


async def test_an_owner_rule_of_the_apps_own(redis: Redis) -> None:
    def by_header(connection: HTTPConnection) -> str | None:
        return connection.headers.get("x-team")

    chat_stream = ChatStream(engine=ScriptedEngine(), redis=redis, owner=by_header)
    app = FastAPI()
    chat_stream.mount(app)
    app.add_middleware(SessionMiddleware, store=RedisSessionStore(redis), secret_key=SECRET)
    async with client_for(app) as one, client_for(app) as two:
        await one.post("/chat_stream", json={"user_input": "ours"}, headers={"x-team": "red"})
        assert await titles(two) == []
        two.headers["x-team"] = "red"
        assert await titles(two) == ["ours"]


async def test_a_session_of_the_release_before_keeps_its_conversation(redis: Redis) -> None:
    """That release stored the one ChatPrompt in the session (segmented), with its feedback."""
    store = RedisSessionStore(redis)
    old = ChatPrompt(
        None,
        [
            Message("user", "What is the capital of France?"),
            Message("assistant", "Paris.", "reply-1", "stop", 12, 2),
        ],
    )
    feedback = {"reply-1": {"message_id": "reply-1", "is_like": True, "form_data": {}}}
    await store.save("old-session", {"generation_params": dumps({"top_k": 5})}, (), create=True)
    session = await _legacy_session(store, old, feedback)
    app = signed_in_app(redis)
    async with client_for(app) as client:
        client.cookies.set("session", session)
        prompt = (await client.get("/get_prompt")).json()
        assert [m["content"] for m in prompt["messages"]] == [
            "What is the capital of France?",
            "Paris.",
        ]
        assert prompt["messages"][1]["feedback"]["is_like"] is True
        assert prompt["messages"][0]["message_id"]  # given one on the way
        assert (await client.get("/get_generation_params")).json()["top_k"] == 5
        assert await titles(client) == ["What is the capital of France?"]
        await client.post("/chat_stream", json={"user_input": "And of Italy?"})
        messages = (await client.get("/get_prompt")).json()["messages"]
        assert len(messages) == 4
    stored = await store.load("old-session")
    assert stored is not None
    assert "chat_prompt" not in stored and "feedback" not in stored  # moved out, once


async def _legacy_session(store: RedisSessionStore, prompt: ChatPrompt, feedback: Any) -> str:
    from sessions.serializer import dump_fields
    from sessions.signing import CookieSigner

    fields = {**dump_fields("chat_prompt", prompt), "feedback": json.dumps(feedback)}
    await store.save("old-session", fields, (), create=True)
    return CookieSigner(SECRET).sign("old-session")
