from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from chatstream import ChatStream
from sessions import RedisSessionStore, SessionMiddleware

from .scripted import ScriptedEngine

SECRET = "test-secret"

AppFactory = Callable[..., tuple[FastAPI, ChatStream]]


@pytest.fixture
def engine() -> ScriptedEngine:
    return ScriptedEngine()


@pytest.fixture
def make_app(redis: Redis) -> AppFactory:
    """An app serving a ChatStream on ``redis``; keyword arguments go to ChatStream."""

    def make(engine: Any, **options: Any) -> tuple[FastAPI, ChatStream]:
        chat_stream = ChatStream(engine=engine, redis=redis, **options)
        app = FastAPI()
        app.add_middleware(SessionMiddleware, store=RedisSessionStore(redis), secret_key=SECRET)
        chat_stream.mount(app)
        return app, chat_stream

    return make


@pytest.fixture
async def chat(make_app: AppFactory, engine: ScriptedEngine) -> AsyncIterator[httpx.AsyncClient]:
    app, chat_stream = make_app(engine)
    async with client_for(app) as client:
        yield client
    await chat_stream.aclose()


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
