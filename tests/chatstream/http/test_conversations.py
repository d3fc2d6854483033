"""Many conversations per owner: the routes, chatting in any of them, edit and continue, the
limits, and what another owner sees (nothing)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from redis.asyncio import Redis

from chatstream.keys import ConversationKeys

from ..conftest import AppFactory, client_for
from ..scripted import ScriptedEngine


async def say(client: httpx.AsyncClient, text: str, **extra: Any) -> httpx.Response:
    response = await client.post("/chat_stream", json={"user_input": text, **extra})
    assert response.status_code == 200, response.text
    return response


async def listed(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/conversations")
    assert response.status_code == 200
    conversations: list[dict[str, Any]] = response.json()["conversations"]
    return conversations


async def contents(client: httpx.AsyncClient, conversation_id: str) -> list[str]:
    response = await client.get(f"/conversations/{conversation_id}")
    assert response.status_code == 200
    return [m["content"] for m in response.json()["messages"]]


async def test_new_chat_keeps_the_old_one_and_every_conversation_can_be_chatted_in(
    chat: httpx.AsyncClient,
) -> None:
    assert await listed(chat) == []
    await say(chat, "What is the weather like in Paris today?")
    (first,) = await listed(chat)
    assert (first["title"], first["message_count"], first["active"]) == (
        "What is the weather like in Paris today?",
        2,
        True,
    )
    created = await chat.post("/conversations", json={})
    assert created.status_code == 201
    second = created.json()
    assert (second["title"], second["message_count"], second["active"]) == ("New chat", 0, True)
    await say(chat, "And in Rome?")
    assert (await chat.get("/get_prompt")).json()["conversation_id"] == second["id"]
    assert await contents(chat, first["id"]) == [
        "What is the weather like in Paris today?",
        "Hello world",
    ]
    await say(chat, "Back to Paris", conversation_id=first["id"])  # it becomes the active one
    now = await listed(chat)
    assert [c["id"] for c in now] == [first["id"], second["id"]]  # most recently updated first
    assert [c["active"] for c in now] == [True, False]
    prompt = (await chat.get("/get_prompt")).json()
    assert prompt["conversation_id"] == first["id"]
    assert [m["content"] for m in prompt["messages"]][-2:] == ["Back to Paris", "Hello world"]
    assert all(m["message_id"] for m in prompt["messages"])  # user messages carry ids too


async def test_rename_and_delete(chat: httpx.AsyncClient, redis: Redis) -> None:
    await say(chat, "hello")
    (conversation,) = await listed(chat)
    renamed = await chat.patch(f"/conversations/{conversation['id']}", json={"title": " Trip "})
    assert (renamed.status_code, renamed.json()["title"]) == (200, "Trip")
    await say(chat, "more")
    assert (await listed(chat))[0]["title"] == "Trip"  # a rename sticks
    for title in ("", "   ", "x" * 201, 5, None):
        bad = await chat.patch(f"/conversations/{conversation['id']}", json={"title": title})
        assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_request"), title
    deleted = await chat.delete(f"/conversations/{conversation['id']}")
    assert deleted.status_code == 204
    assert await listed(chat) == []
    assert (await chat.get(f"/conversations/{conversation['id']}")).status_code == 404
    assert (await chat.delete(f"/conversations/{conversation['id']}")).status_code == 404
    keys = ConversationKeys.build(conversation["id"])
    assert await redis.exists(keys.record, keys.lease) == 0
    assert (await chat.get("/get_prompt")).json()["messages"] == []  # no active one left


async def test_another_owner_sees_nothing_and_bad_ids_are_404(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    app, _ = make_app(engine)
    async with client_for(app) as alice, client_for(app) as mallory:
        await say(alice, "secret plans")
        (conversation,) = await listed(alice)
        path = f"/conversations/{conversation['id']}"
        assert await listed(mallory) == []
        for method in ("GET", "DELETE"):
            response = await mallory.request(method, path)
            assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")
        assert (await mallory.patch(path, json={"title": "mine"})).status_code == 404
        refused = await mallory.post(
            "/chat_stream", json={"user_input": "hi", "conversation_id": conversation["id"]}
        )
        assert refused.status_code == 404
        for bad in ("nope", "{x}", "a" * 65, "%00"):
            assert (await alice.get(f"/conversations/{bad}")).status_code == 404, bad
        assert await contents(alice, conversation["id"]) == ["secret plans", "Hello world"]


async def test_paging_and_its_bad_parameters(chat: httpx.AsyncClient) -> None:
    for _ in range(3):
        assert (await chat.post("/conversations", json={})).status_code == 201
    first = (await chat.get("/conversations", params={"limit": 2})).json()
    assert len(first["conversations"]) == 2 and first["next"]
    rest = (await chat.get("/conversations", params={"before": first["next"]})).json()
    assert len(rest["conversations"]) == 1 and rest["next"] is None
    for params in ({"limit": 0}, {"limit": 101}, {"limit": "x"}, {"before": "garbage"}):
        assert (await chat.get("/conversations", params=params)).status_code == 422, params


async def test_an_owner_has_at_most_max_conversations(make_app: AppFactory) -> None:
    app, _ = make_app(ScriptedEngine(), max_conversations=2)
    async with client_for(app) as client:
        for _ in range(2):
            assert (await client.post("/conversations", json={})).status_code == 201
        refused = await client.post("/conversations", json={"title": "a third"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (
            409,
            "too_many_conversations",
        )


async def test_a_conversation_that_is_generating_cannot_be_deleted(
    make_app: AppFactory,
) -> None:
    engine = ScriptedEngine(pause_after=1)
    app, _ = make_app(engine)
    async with client_for(app) as client:
        conversation = (await client.post("/conversations", json={})).json()
        running = asyncio.create_task(client.post("/chat_stream", json={"user_input": "hi"}))
        await engine.paused.wait()
        busy = await client.delete(f"/conversations/{conversation['id']}")
        assert (busy.status_code, busy.json()["error"]["code"]) == (409, "session_busy")
        engine.resume.set()
        await running
        assert (await client.delete(f"/conversations/{conversation['id']}")).status_code == 204


async def test_edit_replaces_a_user_message_and_drops_what_came_after(
    chat: httpx.AsyncClient, engine: ScriptedEngine
) -> None:
    await say(chat, "one")
    await say(chat, "two")
    await say(chat, "three")
    messages = (await chat.get("/get_prompt")).json()["messages"]
    two = messages[2]
    edited = await chat.post(
        "/chat_stream", json={"edit": {"message_id": two["message_id"], "user_input": "TWO"}}
    )
    assert edited.status_code == 200
    after = (await chat.get("/get_prompt")).json()["messages"]
    assert [m["content"] for m in after] == ["one", "Hello world", "TWO", "Hello world"]
    assert after[2]["message_id"] == two["message_id"]
    assert [m["content"] for m in engine.requests[-1].messages] == ["one", "Hello world", "TWO"]
    reply_id = after[1]["message_id"]
    for bad in (reply_id, "unknown"):  # only a user message of this conversation
        refused = await chat.post(
            "/chat_stream", json={"edit": {"message_id": bad, "user_input": "x"}}
        )
        assert (refused.status_code, refused.json()["error"]["code"]) == (404, "not_found")
    both = await chat.post(
        "/chat_stream",
        json={"regenerate": True, "edit": {"message_id": two["message_id"], "user_input": "x"}},
    )
    assert both.status_code == 422


async def test_continue_extends_a_reply_cut_at_the_length_limit_into_one_reply(
    make_app: AppFactory,
) -> None:
    engine = ScriptedEngine(finish_reason="length")
    app, _ = make_app(engine)
    async with client_for(app) as client:
        nothing = await client.post("/chat_stream", json={"continue": True})
        assert (nothing.status_code, nothing.json()["error"]["code"]) == (
            409,
            "nothing_to_continue",
        )
        await say(client, "tell me a story")
        engine.finish_reason = "stop"
        continued = await client.post("/chat_stream", json={"continue": True})
        assert (continued.status_code, continued.text) == (200, "Hello world")
        assert engine.requests[-1].assistant_prefix == "Hello world"
        messages = (await client.get("/get_prompt")).json()["messages"]
        assert [(m["role"], m["content"]) for m in messages] == [
            ("user", "tell me a story"),
            ("assistant", "Hello worldHello world"),
        ]
        assert messages[-1]["finish_reason"] == "stop"
        assert messages[-1]["message_id"] == continued.headers["x-message-id"]
        again = await client.post("/chat_stream", json={"continue": True})
        assert again.status_code == 409  # a whole reply has nothing to continue
