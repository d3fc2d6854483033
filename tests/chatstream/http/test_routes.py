from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.requests import Request

from ..conftest import AppFactory, client_for
from ..scripted import ScriptedEngine


async def test_generation_params_round_trip_and_reach_the_engine(
    chat: httpx.AsyncClient, engine: ScriptedEngine
) -> None:
    defaults = (await chat.get("/get_generation_params")).json()
    assert defaults == {
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 50,
        "max_new_tokens": 256,
        "repetition_penalty": 1.0,
    }
    changed = await chat.post("/set_generation_params", json={"temperature": 0, "top_k": 5})
    assert changed.status_code == 200
    assert changed.json() == {**defaults, "temperature": 0.0, "top_k": 5}
    await chat.post("/set_generation_params", json={"max_new_tokens": 32})
    assert (await chat.get("/get_generation_params")).json()["top_k"] == 5
    await chat.post("/chat_stream", json={"user_input": "hi"})
    params = engine.requests[0].params
    assert (params.temperature, params.top_k, params.max_new_tokens) == (0.0, 5, 32)


@pytest.mark.parametrize(
    "body",
    [
        {"temperature": -0.1},
        {"temperature": 2.5},
        {"top_p": 0},
        {"top_p": 1.5},
        {"top_k": -1},
        {"max_new_tokens": 0},
        {"repetition_penalty": 0.5},
        {"temperature": "0.5"},
        {"top_k": True},
        {"top_k": 1.5},
        {"unknown": 1},
        [1],
    ],
)
async def test_generation_params_out_of_range_are_422(chat: httpx.AsyncClient, body: Any) -> None:
    response = await chat.post("/set_generation_params", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    assert (await chat.get("/get_generation_params")).json()["temperature"] == 0.7


async def test_feedback_is_stored_and_passed_to_the_hook(make_app: AppFactory) -> None:
    received: list[dict[str, Any]] = []

    async def on_feedback(request: Request, feedback: dict[str, Any]) -> None:
        assert request.state.session.get_session_id()
        received.append(feedback)

    app, _ = make_app(ScriptedEngine(), on_feedback=on_feedback)
    async with client_for(app) as client:
        reply = await client.post("/chat_stream", json={"user_input": "hi"})
        message_id = reply.headers["x-message-id"]
        body = {"message_id": message_id, "is_like": False, "form_data": {"reason": "too short"}}
        response = await client.post("/set_feedback", json=body)
        assert response.status_code == 200
        assert received == [body]
        unknown = await client.post("/set_feedback", json={**body, "message_id": "nope"})
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "not_found"
        bad = await client.post("/set_feedback", json={"message_id": message_id, "is_like": "yes"})
        assert bad.status_code == 422
    async with client_for(app) as stranger:
        response = await stranger.post("/set_feedback", json=body)
        assert response.status_code == 404


async def test_get_load_and_metrics(chat: httpx.AsyncClient) -> None:
    await chat.post("/chat_stream", json={"user_input": "hi"})
    load = (await chat.get("/get_load")).json()
    assert load == {"processing": 0, "waiting": 0, "capacity": 4, "queue_capacity": 64}
    metrics = await chat.get("/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    assert 'chatstream_outcomes_total{outcome="success"} 1.0' in text
    assert "chatstream_tokens_generated_total 2.0" in text
    assert "chatstream_time_to_first_token_seconds_count 1.0" in text
    assert "chatstream_inter_token_latency_seconds_count 1.0" in text
    assert "chatstream_queue_wait_seconds_count 1.0" in text
    assert "chatstream_generations_active 0.0" in text


async def test_health_and_readiness(chat: httpx.AsyncClient) -> None:
    assert (await chat.get("/healthz")).json() == {"status": "ok"}
    ready = await chat.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model": "scripted"}


async def feedback_of(client: httpx.AsyncClient) -> dict[str, Any]:
    """The feedback on the active conversation's replies, by message id."""
    messages = (await client.get("/get_prompt")).json()["messages"]
    return {m["message_id"]: m["feedback"] for m in messages if "feedback" in m}


async def test_feedback_is_one_entry_per_reply_and_goes_with_its_reply(
    make_app: AppFactory,
) -> None:
    app, _ = make_app(ScriptedEngine())
    async with client_for(app) as client:
        first = (await client.post("/chat_stream", json={"user_input": "hi"})).headers
        reply = first["x-message-id"]
        for is_like in (True, False):  # the latest wins
            body = {"message_id": reply, "is_like": is_like, "form_data": {"n": 1}}
            assert (await client.post("/set_feedback", json=body)).status_code == 200
        assert [entry["is_like"] for entry in (await feedback_of(client)).values()] == [False]
        await client.post("/chat_stream", json={"regenerate": True})
        assert await feedback_of(client) == {}  # the regenerated reply took its feedback
        latest = (await client.get("/get_prompt")).json()["messages"][-1]["message_id"]
        await client.post("/set_feedback", json={"message_id": latest, "is_like": True})
        await client.post("/set_generation_params", json={"top_k": 7})
        await client.post("/clear_context")
        assert await feedback_of(client) == {}
        assert (await client.get("/get_generation_params")).json()["top_k"] == 7  # kept


async def test_feedback_form_data_is_bounded(chat: httpx.AsyncClient) -> None:
    reply = (await chat.post("/chat_stream", json={"user_input": "hi"})).headers["x-message-id"]
    big = {"message_id": reply, "is_like": True, "form_data": {"text": "x" * 4096}}
    response = await chat.post("/set_feedback", json=big)
    assert (response.status_code, response.json()["error"]["code"]) == (413, "input_too_long")
    fits = {"message_id": reply, "is_like": True, "form_data": {"text": "x" * 4000}}
    assert (await chat.post("/set_feedback", json=fits)).status_code == 200


async def test_a_full_conversation_is_409_and_loses_nothing(make_app: AppFactory) -> None:
    app, _ = make_app(ScriptedEngine(), max_messages=4, max_conversation_bytes=40)
    async with client_for(app) as client:
        assert (await client.post("/chat_stream", json={"user_input": "one"})).status_code == 200
        assert (await client.post("/chat_stream", json={"user_input": "two"})).status_code == 200
        full = await client.post("/chat_stream", json={"user_input": "three"})
        assert (full.status_code, full.json()["error"]["code"]) == (409, "conversation_full")
        assert "4 messages" in full.json()["error"]["message"]
        assert (await client.post("/chat_stream", json={"regenerate": True})).status_code == 200
        said = [m["content"] for m in (await client.get("/get_prompt")).json()["messages"]]
        assert said == ["one", "Hello world", "two", "Hello world"]
        await client.post("/clear_context")
        too_big = await client.post("/chat_stream", json={"user_input": "x" * 41})
        assert (too_big.status_code, too_big.json()["error"]["code"]) == (409, "conversation_full")
