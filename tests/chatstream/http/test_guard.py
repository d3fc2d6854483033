"""Request hygiene on every route: JSON bodies only, no cross-site state changes, the host
check, API keys for every route when asked, private headers, slow bodies, reply-length cap."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from chatstream.app import create_app
from chatstream.config import RequestLimits
from chatstream.settings import Settings

from ..asgi import ManualRequest
from ..conftest import AppFactory, client_for
from ..scripted import ScriptedEngine
from ..test_chat_stream import history, turn

KEY = "sk-guard-0123456789abcdef0123456789"
POSTS: list[tuple[str, dict[str, Any]]] = [
    ("/chat_stream", {"user_input": "injected"}),
    ("/set_generation_params", {"temperature": 0}),
    ("/set_feedback", {"message_id": "m", "is_like": True}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "injected"}]}),
    ("/clear_context", {}),
]


@pytest.fixture
async def chat(make_app: AppFactory, engine: ScriptedEngine) -> Any:
    app, _ = make_app(engine, allowed_origins=["https://app.example.com/"])
    async with client_for(app) as client:
        assert (await turn(client, user_input="kept")).status_code == 200
        yield client


@pytest.mark.parametrize(("path", "payload"), POSTS)
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_a_body_that_is_not_json_is_415_and_stores_nothing(
    chat: httpx.AsyncClient, engine: ScriptedEngine, path: str, payload: Any, content_type: str
) -> None:
    """A form or a text/plain fetch from any web page needs no CORS preflight: refused."""
    body = httpx.Request("POST", "/", json=payload).content
    response = await chat.post(path, content=body, headers={"content-type": content_type})
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert [m["content"] for m in await history(chat)] == ["kept", "Hello world"]
    assert len(engine.requests) == 1


@pytest.mark.parametrize(("path", "payload"), POSTS)
@pytest.mark.parametrize(
    "headers",
    [
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
        {"origin": "https://evil.example"},
        {"origin": "http://127.0.0.1.evil.example"},
        {"origin": "null"},
        {"sec-fetch-site": "cross-site", "origin": "http://127.0.0.1"},
    ],
)
async def test_a_cross_site_request_is_403_and_stores_nothing(
    chat: httpx.AsyncClient, path: str, payload: Any, headers: dict[str, str]
) -> None:
    response = await chat.post(path, json=payload, headers=headers)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden_origin"
    assert [m["content"] for m in await history(chat)] == ["kept", "Hello world"]


@pytest.mark.parametrize(
    "headers",
    [
        {},  # not a browser
        {"sec-fetch-site": "same-origin"},
        {"sec-fetch-site": "none"},  # typed in the address bar
        {"origin": "http://127.0.0.1"},
        {"origin": "https://app.example.com"},  # listed in allowed_origins
        {"origin": "https://app.example.com", "sec-fetch-site": "cross-site"},
    ],
)
async def test_same_site_and_allowed_origins_pass(
    chat: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    assert (
        await chat.post("/chat_stream", json={"user_input": "ok"}, headers=headers)
    ).status_code == 200


async def test_a_link_from_another_site_still_opens_the_page(chat: httpx.AsyncClient) -> None:
    cross = {"sec-fetch-site": "cross-site", "origin": "https://evil.example"}
    for path in ("/", "/get_prompt", "/static/app.js"):
        assert (await chat.get(path, headers=cross)).status_code == 200


async def test_json_and_text_answers_are_private_and_not_sniffed(chat: httpx.AsyncClient) -> None:
    answers = [
        await chat.get("/get_prompt"),
        await chat.get("/get_generation_params"),
        await chat.post("/chat_stream", json={"user_input": "hi"}),
        await chat.post(
            "/chat_stream", json={"user_input": "hi"}, headers={"accept": "text/event-stream"}
        ),
        await chat.post("/chat_stream", json={"user_input": ""}),  # an error
        await chat.post("/v1/chat/completions", json={"messages": []}),
        await chat.get("/v1/models"),
    ]
    for answer in answers:
        assert answer.headers["x-content-type-options"] == "nosniff", answer.request.url
        assert answer.headers["cache-control"] == "no-store", answer.request.url
    assert (await chat.get("/metrics")).headers["x-content-type-options"] == "nosniff"


async def test_replies_longer_than_the_servers_limit_are_refused(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    app, _ = make_app(engine, max_new_tokens=50, max_new_tokens_limit=100)
    async with client_for(app) as client:
        refused = await client.post("/set_generation_params", json={"max_new_tokens": 101})
        assert refused.status_code == 422
        assert "at most 100" in refused.json()["error"]["message"]
        assert (
            await client.post("/set_generation_params", json={"max_new_tokens": 100})
        ).status_code == 200
        messages = [{"role": "user", "content": "hi"}]
        for field in ("max_tokens", "max_completion_tokens"):
            body = {"messages": messages, field: 101}
            refused = await client.post("/v1/chat/completions", json=body)
            assert refused.status_code == 422
            assert f"{field} must be at most 100" in refused.json()["error"]["message"]
    assert RequestLimits().max_new_tokens_limit == 2048
    with pytest.raises(ValueError, match="over the limit of 256"):
        make_app(engine, max_new_tokens=300, max_new_tokens_limit=256)


async def test_a_body_that_trickles_in_is_408(make_app: AppFactory, engine: ScriptedEngine) -> None:
    app, chat_stream = make_app(engine)
    chat_stream.limits = RequestLimits(body_timeout=0.05)
    stalled = ManualRequest(app, "/chat_stream", {"user_input": "hi"}, stall_body=True)
    await asyncio.wait_for(stalled.run(), 5)
    assert stalled.status == 408
    assert '"request_timeout"' in stalled.text
    assert engine.requests == []


async def test_with_scope_all_every_route_but_the_probes_needs_a_key(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    app, _ = make_app(engine, api_keys=[KEY], api_keys_scope="all")
    async with client_for(app) as client:
        for method, path in [("POST", "/chat_stream"), ("GET", "/get_prompt"), ("GET", "/")]:
            response = await client.request(method, path, json={"user_input": "hi"})
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
        for probe in ("/healthz", "/readyz"):
            assert (await client.get(probe)).status_code == 200
        client.headers["authorization"] = f"Bearer {KEY}"
        assert (await turn(client, user_input="hi")).status_code == 200
        assert (await client.get("/get_prompt")).status_code == 200
    app, _ = make_app(engine, api_keys=[KEY])  # scope v1: the chat routes stay open
    async with client_for(app) as client:
        assert (await turn(client, user_input="hi")).status_code == 200
        assert (await client.get("/v1/models")).status_code == 401


async def test_the_served_app_answers_only_its_host_names() -> None:
    """A hostile name resolved to 127.0.0.1 (DNS rebinding) must not reach a loopback server."""
    app = create_app(Settings(model="mock", mock_token_delay=0.0, secret_key="k"))
    refused = await answer(app, "evil.example")
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid_host")
    for host in ("127.0.0.1", "localhost:8000", "[::1]:8000"):
        assert (await answer(app, host)).status_code == 200
    named = Settings(model="mock", secret_key="k", host="0.0.0.0", allowed_hosts="chat.example.com")
    assert (await answer(create_app(named), "chat.example.com")).status_code == 200
    assert (await answer(create_app(named), "127.0.0.1")).status_code == 400
    anyone = create_app(Settings(model="mock", secret_key="k", allowed_hosts="*"))
    assert (await answer(anyone, "evil.example")).status_code == 200


async def answer(app: Any, host: str) -> httpx.Response:
    async with client_for(app) as client:
        return await client.get("/healthz", headers={"host": host})
