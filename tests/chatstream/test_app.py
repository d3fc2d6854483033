from __future__ import annotations

import pytest
from redis.asyncio import Redis

from chatstream import ChatStream
from chatstream.app import create_app
from chatstream.cli import build_parser, main
from chatstream.engines.batched import BatchedEngine
from chatstream.engines.hf import TransformersEngine
from chatstream.settings import ConfigError, Settings
from chatstream.testing import free_port
from tests.servers import RedisProcess

from ..sse import parse_events
from .conftest import client_for
from .tiny_model import TinyLlama, tiny_llama, tiny_sliding_window_model, tiny_tokenizer


async def test_the_served_app_holds_a_conversation() -> None:
    app = create_app(Settings(model="mock", mock_token_delay=0.0, secret_key="k"))
    async with client_for(app) as client:
        first = await client.post(
            "/chat_stream", json={"user_input": "What is the capital of France?"}
        )
        assert first.status_code == 200
        assert first.text.startswith("What is the capital of France?")
        second = await client.post("/chat_stream", json={"user_input": "And of Italy?"})
        assert second.text.startswith("And of Italy?")
        prompt = (await client.get("/get_prompt")).json()
        assert [m["role"] for m in prompt["messages"]] == ["user", "assistant"] * 2
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["model"] == "mock"


def test_refuses_to_start_with_redis_and_no_secret_key() -> None:
    with pytest.raises(ConfigError, match="CHATSTREAM_SECRET_KEY"):
        create_app(Settings(model="mock", redis_url="redis://127.0.0.1:6379/15"))


def test_a_short_secret_key_is_refused_with_redis() -> None:
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        create_app(Settings(model="mock", redis_url="redis://127.0.0.1:6379/15", secret_key="k"))
    create_app(Settings(model="mock", secret_key="k"))  # one process, its own store: allowed


def test_bound_wide_open_it_warns(caplog: pytest.LogCaptureFixture) -> None:
    create_app(Settings(model="mock", secret_key="k", host="0.0.0.0"))
    assert "any host name reaches it and every route is open" in caplog.text
    caplog.clear()
    create_app(Settings(model="mock", secret_key="k", host="127.0.0.1"))
    assert "every route is open" not in caplog.text


def test_random_key_warning_without_redis(caplog: pytest.LogCaptureFixture) -> None:
    create_app(Settings(model="mock"))
    assert "CHATSTREAM_SECRET_KEY is not set" in caplog.text


def test_cli_has_a_flag_for_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    help_text = capsys.readouterr().out
    for variable in (
        "HOST",
        "PORT",
        "REDIS_URL",
        "CHATSTREAM_SECRET_KEY",
        "CHATSTREAM_COOKIE_NAME",
        "CHATSTREAM_MODEL",
        "CHATSTREAM_MOCK_TOKEN_DELAY",
        "CHATSTREAM_MAX_CONCURRENT",
        "CHATSTREAM_MAX_QUEUE",
        "CHATSTREAM_QUEUE_TIMEOUT",
        "CHATSTREAM_LEASE_TTL",
        "CHATSTREAM_MAX_NEW_TOKENS",
        "CHATSTREAM_API_KEYS",
        "CHATSTREAM_PREFILL_TOKENS",
        "CHATSTREAM_PREFIX_CACHE_MB",
    ):
        assert variable in help_text


def test_cli_refuses_redis_without_a_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHATSTREAM_SECRET_KEY", raising=False)
    code = main(["serve", "--model", "mock", "--redis-url", "redis://127.0.0.1:6379/15"])
    assert code == 2
    assert "CHATSTREAM_SECRET_KEY" in capsys.readouterr().err


EVERY_ROUTE = [
    ("GET", "/", None),
    ("GET", "/static/app.js", None),
    ("GET", "/static/style.css", None),
    ("GET", "/get_prompt", None),
    ("GET", "/get_generation_params", None),
    ("GET", "/get_load", None),
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
    ("GET", "/metrics", None),
    ("GET", "/v1/models", None),
    ("POST", "/set_feedback", {"message_id": "none-such", "is_like": True}),
    ("POST", "/chat_stream", {"regenerate": True}),
    ("POST", "/chat_stream", {"continue": True}),
    ("POST", "/chat_stream", {"edit": {"message_id": "0" * 32, "user_input": "Hi"}}),
    ("GET", f"/chat_stream/{'0' * 32}", None),
    ("POST", "/stop_generation", {}),
    ("GET", "/conversations", None),
    ("GET", f"/conversations/{'0' * 32}", None),
    ("PATCH", f"/conversations/{'0' * 32}", {"title": "x"}),
    ("DELETE", f"/conversations/{'0' * 32}", None),
    ("POST", "/clear_context", None),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}),
]


@pytest.mark.model
async def test_every_route_answers_on_a_fresh_an_empty_and_a_cleared_conversation() -> None:
    """On the bundled model (whose chat template refuses an empty conversation): a first visit,
    a session with no conversation yet, and one just cleared never get a 5xx."""
    app = create_app(Settings(secret_key="k", max_new_tokens=4))
    async with client_for(app) as client:

        async def every_route(state: str) -> None:
            for method, path, body in EVERY_ROUTE:
                response = await client.request(method, path, json=body)
                assert response.status_code < 500, (state, path, response.text)
            prompt = (await client.get("/get_prompt")).json()
            assert (prompt["prompt"], prompt["messages"]) == ("", []), state

        await every_route("fresh")
        await client.post("/set_generation_params", json={"temperature": 0})
        await every_route("empty")
        assert (await client.post("/chat_stream", json={"user_input": "Hi"})).status_code == 200
        await client.post("/clear_context")
        await every_route("cleared")


@pytest.mark.model
async def test_the_bundled_model_answers_and_remembers() -> None:
    app = create_app(Settings(secret_key="k", max_new_tokens=48))
    async with client_for(app) as client:
        await client.post("/set_generation_params", json={"temperature": 0})
        first = await client.post(
            "/chat_stream", json={"user_input": "What is the capital of France?"}
        )
        assert first.status_code == 200
        assert "Paris" in first.text
        second = await client.post(
            "/chat_stream", json={"user_input": "What river flows through it?"}
        )
        assert second.status_code == 200
        prompt = (await client.get("/get_prompt")).json()
        assert [m["content"] for m in prompt["messages"]][:2] == [
            "What is the capital of France?",
            first.text,
        ]
        assert "What is the capital of France?" in prompt["prompt"]
        assert "<|im_start|>assistant" in prompt["prompt"]


async def test_a_model_is_served_with_continuous_batching_by_default() -> None:
    chat_stream = ChatStream(tiny_llama(), tiny_tokenizer())
    assert isinstance(chat_stream.engine, BatchedEngine)
    assert chat_stream.engine.slots == 16
    assert chat_stream.engine.prefill_tokens == 256
    assert chat_stream.engine.prefix_cache.capacity_bytes == 256 * 2**20
    assert chat_stream.context_len == tiny_llama().config.max_position_embeddings
    await chat_stream.aclose()


async def test_the_served_app_warms_the_model_up_before_it_listens() -> None:
    """uvicorn listens, so ``/readyz`` answers, only once the lifespan's startup is done: by
    then the model has run the engine's warm-up, and the first request pays nothing more."""
    model = TinyLlama()
    chat_stream = ChatStream(model, tiny_tokenizer(), slots=4)
    assert chat_stream.engine.slots == 4
    app = create_app(Settings(secret_key="k"), chat_stream=chat_stream)
    assert model.steps == 0
    async with app.router.lifespan_context(app):
        assert len(model.prompts) == 3  # a reply alone, then two at once
        async with client_for(app) as client:
            assert (await client.get("/readyz")).status_code == 200


async def test_a_model_that_cannot_batch_is_served_one_generation_at_a_time() -> None:
    chat_stream = ChatStream(tiny_sliding_window_model(), tiny_tokenizer())
    assert isinstance(chat_stream.engine, TransformersEngine)
    await chat_stream.aclose()


def test_bad_engine_settings_are_refused_not_worked_around() -> None:
    with pytest.raises(ValueError, match="prefill_tokens"):
        ChatStream(tiny_llama(), tiny_tokenizer(), prefill_tokens=0)


async def test_a_follow_up_turn_reports_the_prompt_tokens_it_took_from_the_prefix_cache() -> None:
    model = TinyLlama()  # printable replies, which the next prompt repeats token for token
    chat_stream = ChatStream(model, tiny_tokenizer(), prefill_tokens=32, prefix_cache_mb=1)
    assert isinstance(chat_stream.engine, BatchedEngine)
    assert chat_stream.engine.prefill_tokens == 32
    assert chat_stream.engine.prefix_cache.capacity_bytes == 2**20
    app = create_app(Settings(secret_key="k"), chat_stream=chat_stream)
    async with client_for(app) as client:
        await client.post("/set_generation_params", json={"temperature": 0, "max_new_tokens": 8})
        usages = []
        for user_input in ("hello there", "and again"):
            response = await client.post(
                "/chat_stream",
                json={"user_input": user_input},
                headers={"accept": "text/event-stream"},
            )
            done = parse_events(response.text)[-1]
            usages.append(done.data["usage"])
        metrics = (await client.get("/metrics")).text
    first, second = usages
    assert first["cached_tokens"] == 0
    # The first turn's prompt and reply, but its last token, which never ran.
    assert second["cached_tokens"] == first["prompt_tokens"] + first["completion_tokens"] - 1
    assert second["prompt_tokens"] > second["cached_tokens"]
    assert f"chatstream_prompt_tokens_cached_total {second['cached_tokens']:.1f}" in metrics
    total = first["prompt_tokens"] + second["prompt_tokens"]
    assert f"chatstream_prompt_tokens_total {total:.1f}" in metrics


@pytest.mark.model
async def test_continuing_a_reply_prefills_only_what_the_cache_lacks() -> None:
    """On the bundled model: a reply cut at the length limit, then continued. The continue's
    prompt is the cut reply's prompt and reply, which the prefix cache holds, so it runs about
    one token of prefill; the stored result is one reply."""
    app = create_app(Settings(secret_key="k"))
    async with client_for(app) as client:
        await client.post("/set_generation_params", json={"temperature": 0, "max_new_tokens": 8})
        sse = {"accept": "text/event-stream"}
        cut = parse_events(
            (
                await client.post(
                    "/chat_stream", json={"user_input": "Tell me about Paris."}, headers=sse
                )
            ).text
        )[-1]
        assert cut.data["finish_reason"] == "length"
        going_on = parse_events(
            (await client.post("/chat_stream", json={"continue": True}, headers=sse)).text
        )[-1]
        messages = (await client.get("/get_prompt")).json()["messages"]
    first, second = cut.data["usage"], going_on.data["usage"]
    assert second["prompt_tokens"] - second["cached_tokens"] <= 2  # the rest came from the cache
    assert second["cached_tokens"] >= first["prompt_tokens"] + first["completion_tokens"] - 1
    assert [m["role"] for m in messages] == ["user", "assistant"]  # one reply
    assert (
        messages[1]["completion_tokens"] == first["completion_tokens"] + second["completion_tokens"]
    )


@pytest.mark.redis
async def test_readyz_is_503_while_redis_cannot_take_writes(private_redis: RedisProcess) -> None:
    """A read-only replica (as during a failover) answers pings: readiness needs a write."""
    secret = "s" * 32
    app = create_app(Settings(model="mock", redis_url=private_redis.url, secret_key=secret))
    admin = Redis(port=private_redis.port)
    async with client_for(app) as client:
        assert (await client.get("/readyz")).status_code == 200
        await admin.replicaof("127.0.0.1", str(free_port()))  # a primary that never answers
        refused = await client.get("/readyz")
        assert (refused.status_code, refused.json()["error"]["code"]) == (503, "store_unavailable")
        assert "Retry-After" in refused.headers
        await admin.replicaof("NO", "ONE")
        assert (await client.get("/readyz")).status_code == 200
    await admin.aclose()
