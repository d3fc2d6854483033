"""A real ``chatstream serve`` on a remote model, in front of real upstreams: another
``chatstream serve`` (its ``/v1``), ``transformers serve --continuous-batching`` on the bundled
model, and the fake upstream of the engine tests where the test must see the upstream's side of
a connection."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from chatstream.engines.mock import mock_reply
from chatstream.model import default_cache_dir
from chatstream.testing import ServerProcess, free_port, serve, transformers_serve

from ..sse import parse_events, reply_text
from .engines.fake_upstream import MODEL, FakeUpstream

SSE = {"accept": "text/event-stream"}
# Once the lead's detach grace lands, a client that leaves must still stop generation at once.
FRONT_ENV = {"CHATSTREAM_DETACH_GRACE": "0"}


@contextmanager
def front(model_url: str, *args: str, ready_path: str = "/readyz") -> Iterator[ServerProcess]:
    """``chatstream serve`` whose model is ``model_url``."""
    with serve(["--model", model_url, *args], env=FRONT_ENV, ready_path=ready_path) as server:
        yield server


@contextmanager
def upstream_chatstream(port: int) -> Iterator[ServerProcess]:
    """``chatstream serve`` of the mock engine on ``port``: the upstream, its ``/v1``."""
    with serve(["--model", "mock", "--mock-token-delay", "0.01"], port=port, timeout=60) as server:
        yield server


def test_in_front_of_chatstream_a_turn_streams_and_the_upstream_going_away_is_503() -> None:
    port = free_port()
    with (
        upstream_chatstream(port) as upstream,
        front(f"openai+{upstream.url}/v1#mock") as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        turn = client.post("/chat_stream", json={"user_input": "Bonjour"}, headers=SSE)
        events = parse_events(turn.text)
        expected = "".join(mock_reply([{"role": "user", "content": "Bonjour"}]))
        assert reply_text(events) == expected
        assert (events[-1].name, events[-1].data["finish_reason"]) == ("done", "stop")
        stored = client.get("/get_prompt").json()["messages"]
        assert [(m["role"], m["content"]) for m in stored] == [
            ("user", "Bonjour"),
            ("assistant", expected),
        ]

        # Continuing a reply cut at the length limit cannot be done portably upstream: refused.
        client.post("/set_generation_params", json={"max_new_tokens": 2})
        cut = parse_events(client.post("/chat_stream", json={"user_input": "Go"}, headers=SSE).text)
        assert cut[-1].data["finish_reason"] == "length"
        refused = client.post("/chat_stream", json={"continue": True})
        assert refused.status_code == 422
        assert "cannot continue a reply" in refused.json()["error"]["message"]
        assert len(client.get("/get_prompt").json()["messages"]) == 4  # nothing changed
        client.post("/clear_context")
        client.post("/set_generation_params", json={"max_new_tokens": 256})

        upstream.kill()
        refused = client.post("/chat_stream", json={"user_input": "Still there?"})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "upstream_unavailable"
        assert "retry-after" in refused.headers
        assert client.get("/get_prompt").json()["messages"] == []  # nothing stored
        ready = client.get("/readyz")
        assert (ready.status_code, ready.json()["error"]["code"]) == (
            503,
            "upstream_unavailable",
        )

        with upstream_chatstream(port):
            assert client.get("/readyz").status_code == 200
            again = client.post("/chat_stream", json={"user_input": "Hello again"})
            assert again.status_code == 200
            assert again.text.startswith("Hello again")


async def test_a_client_leaving_closes_the_upstream_request() -> None:
    upstream = FakeUpstream("word " * 2000, step_delay=0.01)
    model_url = f"openai+{upstream.base_url}#{MODEL}"
    try:
        with front(model_url, "--max-new-tokens", "2000", ready_path="/healthz") as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                body = {"user_input": "Tell me everything"}
                async with client.stream("POST", "/chat_stream", json=body) as reply:
                    assert reply.status_code == 200
                    await anext(reply.aiter_text())
                async with asyncio.timeout(30):  # a bound, not a measurement
                    await upstream.disconnected.wait()
                assert upstream.steps < 2000
    finally:
        await upstream.close()


@pytest.mark.model
def test_in_front_of_transformers_serve_on_the_bundled_model() -> None:
    model = str(default_cache_dir())
    with (
        transformers_serve(model) as upstream,
        front(f"openai+{upstream.url}/v1#{model}", "--tokenizer", model) as server,
        httpx.Client(base_url=server.url, timeout=300) as client,
    ):
        client.post("/set_generation_params", json={"temperature": 0, "max_new_tokens": 16})
        turn = client.post(
            "/chat_stream", json={"user_input": "What is the capital of France?"}, headers=SSE
        )
        events = parse_events(turn.text)
        done = events[-1]
        assert done.name == "done", events
        assert reply_text(events).strip()
        assert done.data["finish_reason"] in ("stop", "length")
        assert 0 < done.data["usage"]["completion_tokens"] <= 16
        assert done.data["usage"]["prompt_tokens"] > 10
        stored = client.get("/get_prompt").json()["messages"]
        assert stored[-1]["content"] == reply_text(events)
