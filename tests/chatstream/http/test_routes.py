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
