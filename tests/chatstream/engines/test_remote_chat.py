"""The served app (``create_app``, in-process) on a remote model, its upstream a fake one on
loopback: what a client of ``/chat_stream`` and ``/v1`` sees when the upstream works, is down,
refuses a request, or fails in the middle of a reply."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from chatstream.app import create_app
from chatstream.settings import Settings

from ...sse import parse_events, reply_text
from ..conftest import client_for
from .fake_upstream import MODEL, FakeUpstream

SSE = {"accept": "text/event-stream"}
Served = Callable[[FakeUpstream], httpx.AsyncClient]


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    """``served(upstream)``: a client of the app whose model is ``upstream``'s."""
    clients: list[httpx.AsyncClient] = []
    upstreams: list[FakeUpstream] = []

    def serve(upstream: FakeUpstream) -> httpx.AsyncClient:
        url = f"openai+{upstream.base_url}#{MODEL}"
        app = create_app(Settings(model=url, secret_key="k", rate_limit=0))
        clients.append(client_for(app))
        upstreams.append(upstream)
        return clients[-1]

    yield serve
    for client in clients:
        await client.aclose()
    for upstream in upstreams:
        await upstream.close()


async def test_a_turn_streams_from_the_upstream_and_is_stored(served: Served) -> None:
    upstream = FakeUpstream("Bonjour à tous !", prompt_tokens=12)
    async with served(upstream) as client:
        assert (await client.get("/readyz")).json() == {"status": "ready", "model": MODEL}
        reply = await client.post("/chat_stream", json={"user_input": "Salut"}, headers=SSE)
        events = parse_events(reply.text)
        assert reply_text(events) == "Bonjour à tous !"
        done = events[-1]
        assert (done.name, done.data["usage"]["prompt_tokens"]) == ("done", 12)
        messages = (await client.get("/get_prompt")).json()["messages"]
        assert [(m["role"], m["content"]) for m in messages] == [
            ("user", "Salut"),
            ("assistant", "Bonjour à tous !"),
        ]
        assert upstream.requests[0]["messages"] == [{"role": "user", "content": "Salut"}]
        models = (await client.get("/v1/models")).json()["data"]
        assert [model["id"] for model in models] == [MODEL]


@pytest.mark.parametrize("accept", ["text/plain", "text/event-stream"])
async def test_an_upstream_that_is_down_is_503_before_the_stream_and_nothing_is_stored(
    served: Served, accept: str
) -> None:
    upstream = FakeUpstream(status=502)
    async with served(upstream) as client:
        refused = await client.post(
            "/chat_stream", json={"user_input": "Hi"}, headers={"accept": accept}
        )
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "upstream_unavailable"
        assert refused.headers["retry-after"] == "1"
        assert (await client.get("/get_prompt")).json()["messages"] == []
        completion = await client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "Hi"}], "stream": True},
        )
        assert (completion.status_code, completion.json()["error"]["code"]) == (
            503,
            "upstream_unavailable",
        )
        await upstream.close()
        ready = await client.get("/readyz")
        assert (ready.status_code, ready.json()["error"]["code"]) == (503, "upstream_unavailable")


async def test_a_request_the_upstream_refuses_is_422(served: Served) -> None:
    async with served(FakeUpstream(status=422)) as client:
        await client.post("/set_generation_params", json={"top_k": 5})
        refused = await client.post("/chat_stream", json={"user_input": "Hi"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (422, "invalid_request")


async def test_an_upstream_failing_mid_reply_ends_the_stream_as_an_error(served: Served) -> None:
    async with served(FakeUpstream("Hello there", fail_at_step=5)) as client:
        reply = await client.post("/chat_stream", json={"user_input": "Hi"}, headers=SSE)
        events = parse_events(reply.text)
        assert [e.name for e in events] == ["delta"] * 5 + ["error"]
        stored = (await client.get("/get_prompt")).json()["messages"][-1]
        assert (stored["content"], stored["finish_reason"]) == ("Hello", "error")
