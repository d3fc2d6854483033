"""One client can never starve the others: its requests at once and its turns per minute are
capped, answered 429 before any stream starts, while other clients go on."""

from __future__ import annotations

import asyncio

import httpx

from ..conftest import AppFactory
from ..scripted import ScriptedEngine
from ..test_chat_stream import wait_until


def client_at(app: object, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 5000))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")


async def test_a_client_has_at_most_max_per_client_requests_at_once(
    make_app: AppFactory,
) -> None:
    engine = ScriptedEngine(pause_after=0, slots=8)
    app, _ = make_app(engine, max_per_client=2, rate_limit=0)

    async def running(count: int) -> None:
        await wait_until(lambda: asyncio.sleep(0, engine.running), lambda n: n == count)

    # Three sessions (cookie jars) from one address, and a second address.
    greedy = [client_at(app, "10.0.0.1") for _ in range(3)]
    other = client_at(app, "10.0.0.2")
    held = [
        asyncio.create_task(c.post("/chat_stream", json={"user_input": "hi"})) for c in greedy[:2]
    ]
    await running(2)
    refused = await greedy[2].post("/chat_stream", json={"user_input": "one more"})
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_requests"
    assert refused.headers["retry-after"] == "1"
    waiting = asyncio.create_task(other.post("/chat_stream", json={"user_input": "me too"}))
    await running(3)
    engine.resume.set()
    assert [r.status_code for r in await asyncio.gather(*held, waiting)] == [200] * 3
    assert (await greedy[2].post("/chat_stream", json={"user_input": "now"})).status_code == 200
    for client in (*greedy, other):
        await client.aclose()


async def test_a_client_starts_at_most_rate_limit_turns_a_minute(make_app: AppFactory) -> None:
    app, _ = make_app(ScriptedEngine(), rate_limit=2)
    async with client_at(app, "10.0.0.3") as client, client_at(app, "10.0.0.4") as other:
        for _ in range(2):
            assert (await client.post("/chat_stream", json={"user_input": "x"})).status_code == 200
        refused = await client.post("/chat_stream", json={"user_input": "x"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (429, "too_many_requests")
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        messages = (await client.get("/get_prompt")).json()["messages"]
        assert len(messages) == 4  # the refused turn stored nothing
        assert (await other.post("/chat_stream", json={"user_input": "x"})).status_code == 200
        completion = {"messages": [{"role": "user", "content": "x"}]}
        assert (await client.post("/v1/chat/completions", json=completion)).status_code == 429


async def test_on_v1_a_client_is_its_api_key_only_when_the_server_knows_it(
    make_app: AppFactory,
) -> None:
    completion = {"messages": [{"role": "user", "content": "x"}]}

    def bearer(token: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"}

    # No keys configured: a made-up token per request must not buy a fresh rate limit.
    app, _ = make_app(ScriptedEngine(), rate_limit=2)
    async with client_at(app, "10.0.0.5") as client:
        answers = [
            await client.post("/v1/chat/completions", json=completion, headers=bearer(f"t{n}"))
            for n in range(3)
        ]
        assert [a.status_code for a in answers] == [200, 200, 429]
    # Keys configured: each known key is a client of its own, wherever it comes from.
    keys = ["a" * 32, "b" * 32]
    app, _ = make_app(ScriptedEngine(), rate_limit=2, api_keys=keys)
    async with client_at(app, "10.0.0.6") as client:
        for key in keys:
            for _ in range(2):
                answer = await client.post(
                    "/v1/chat/completions", json=completion, headers=bearer(key)
                )
                assert answer.status_code == 200
        again = await client.post("/v1/chat/completions", json=completion, headers=bearer(keys[0]))
        assert again.status_code == 429
