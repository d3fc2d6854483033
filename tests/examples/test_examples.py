"""Each example app serves a conversation (on the mock engine)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from types import ModuleType

import httpx
import pytest


@pytest.fixture
def load_example(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], ModuleType]]:
    monkeypatch.setenv("CHATSTREAM_MODEL", "mock")
    monkeypatch.delenv("REDIS_URL", raising=False)
    loaded: list[str] = []

    def load(name: str) -> ModuleType:
        module_name = f"examples.{name}"
        sys.modules.pop(module_name, None)
        loaded.append(module_name)
        return importlib.import_module(module_name)

    yield load
    for name in loaded:
        sys.modules.pop(name, None)


def client_for(module: ModuleType) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=module.app)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def converse(client: httpx.AsyncClient) -> None:
    first = await client.post("/chat_stream", json={"user_input": "first question"})
    assert first.status_code == 200
    assert first.text.startswith("first question")
    second = await client.post("/chat_stream", json={"user_input": "second question"})
    assert second.text.startswith("second question")
    again = await client.post("/chat_stream", json={"regenerate": True})
    assert again.status_code == 200
    assert again.headers["x-message-id"] != second.headers["x-message-id"]


async def test_minimal(load_example: Callable[[str], ModuleType]) -> None:
    module = load_example("minimal")
    async with client_for(module) as client:
        await converse(client)


async def test_interception_logs_the_body(
    load_example: Callable[[str], ModuleType], caplog: pytest.LogCaptureFixture
) -> None:
    module = load_example("interception")
    caplog.set_level("INFO", logger="examples.interception")
    async with client_for(module) as client:
        await converse(client)
        bad = await client.post(
            "/chat_stream", content=b"not json", headers={"content-type": "application/json"}
        )
        assert bad.status_code == 400
    assert "user_input='first question' regenerate=None" in caplog.text
    assert "regenerate=True" in caplog.text


async def test_callback_prints_the_finished_turn(
    load_example: Callable[[str], ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    module = load_example("callback")
    async with client_for(module) as client:
        await client.post("/chat_stream", json={"user_input": "hello there"})
    printed = capsys.readouterr().out
    assert "stream ended: success" in printed
    assert "user: hello there" in printed
    assert "assistant: hello there" in printed


async def test_sign_in_keeps_a_users_conversations_on_every_device(
    load_example: Callable[[str], ModuleType],
) -> None:
    module = load_example("sign_in")

    async def titles(client: httpx.AsyncClient) -> list[str]:
        listed = (await client.get("/conversations")).json()["conversations"]
        return [c["title"] for c in listed]

    async with client_for(module) as laptop, client_for(module) as phone:
        await laptop.post("/chat_stream", json={"user_input": "before signing in"})
        wrong = await laptop.post("/login", json={"user": "alice", "password": "nope"})
        assert wrong.status_code == 401
        alice = {"user": "alice", "password": "wonderland"}
        assert (await laptop.post("/login", json=alice)).status_code == 200
        assert await titles(laptop) == ["before signing in"]  # it moved to alice
        await phone.post("/login", json=alice)
        assert await titles(phone) == ["before signing in"]
        await phone.post("/logout")
        assert await titles(phone) == []  # signed out: a new visitor
