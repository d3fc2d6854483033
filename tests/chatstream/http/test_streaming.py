"""What ``handle_chat_stream_request`` returns is a real Starlette response: an endpoint may set
headers, cookies and a background task on it, streamed or refused alike."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from starlette.background import BackgroundTask
from starlette.responses import Response

from ..conftest import AppFactory, client_for
from ..scripted import ScriptedEngine


def decorated_app(make_app: AppFactory, ran: list[str]) -> FastAPI:
    app, chat_stream = make_app(ScriptedEngine())

    @app.post("/chat")
    async def chat(request: Request) -> Response:
        response = await chat_stream.handle_chat_stream_request(request)
        response.headers["X-Trace"] = "trace-1"
        response.set_cookie("seen", "yes", httponly=True)
        response.background = BackgroundTask(ran.append, "background")
        return response

    return app


@pytest.mark.parametrize("accept", ["text/plain", "text/event-stream"])
async def test_an_endpoint_sets_headers_and_cookies_on_the_stream(
    make_app: AppFactory, accept: str
) -> None:
    ran: list[str] = []
    async with client_for(decorated_app(make_app, ran)) as client:
        response = await client.post("/chat", json={"user_input": "hi"}, headers={"accept": accept})
    assert response.status_code == 200
    assert response.headers["x-trace"] == "trace-1"
    assert response.headers["content-type"].startswith(accept)
    assert response.cookies["seen"] == "yes"
    assert "session" in response.cookies  # the session middleware's cookie as well
    assert "Hello" in response.text
    assert ran == ["background"]


async def test_a_refused_turn_carries_them_too(make_app: AppFactory) -> None:
    ran: list[str] = []
    async with client_for(decorated_app(make_app, ran)) as client:
        response = await client.post("/chat", json={"user_input": ""})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    assert response.headers["x-trace"] == "trace-1"
    assert response.cookies["seen"] == "yes"
    assert ran == ["background"]
