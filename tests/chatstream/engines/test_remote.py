"""What only the remote engine does: what it posts, what the upstream sees when a stream is
closed, its failures before and after the first token, readiness, and its token counts. The
engine contract (``test_contract.py``) runs against it too."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from chatstream.engines import completion_stream
from chatstream.engines.base import (
    GenerationParams,
    GenerationRequest,
    PromptRenderer,
    TextDelta,
)
from chatstream.engines.completion_stream import UpstreamError
from chatstream.engines.estimate import EstimatingRenderer
from chatstream.engines.remote import OpenAICompatibleEngine
from chatstream.engines.remote_config import is_model_url, parse_model_url
from chatstream.errors import InvalidRequest, UpstreamUnavailable
from chatstream.model import ModelNotFoundError
from chatstream.testing import free_port

from ..tiny_model import tiny_tokenizer
from .fake_upstream import MODEL, FakeUpstream
from .streams import collect

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
]
Remote = Callable[..., tuple[OpenAICompatibleEngine, FakeUpstream]]
HI = 'data: {"choices": [{"delta": {"content": "Hi"}}]}\n\n'
USAGE = {"prompt_tokens": 9, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 4}}


@pytest.fixture
async def remote() -> AsyncIterator[Remote]:
    """``remote(reply, **upstream_options) -> (engine, upstream)``, closed after the test;
    ``engine_options`` go to the engine."""
    made: list[tuple[OpenAICompatibleEngine, FakeUpstream]] = []

    def make(
        reply: str = "Hello!", *, engine_options: dict[str, object] | None = None, **options: object
    ) -> tuple[OpenAICompatibleEngine, FakeUpstream]:
        upstream = FakeUpstream(reply, **options)  # type: ignore[arg-type]
        engine = OpenAICompatibleEngine(upstream.base_url, MODEL, **(engine_options or {}))  # type: ignore[arg-type]
        made.append((engine, upstream))
        return made[-1]

    yield make
    for engine, upstream in made:
        await engine.aclose()
        await upstream.close()


def request(**params: object) -> GenerationRequest:
    return GenerationRequest("", GenerationParams(**params), MESSAGES)  # type: ignore[arg-type]


async def test_it_posts_the_conversation_and_the_sampling_parameters(remote: Remote) -> None:
    engine, upstream = remote(engine_options={"api_key": "upstream-key"})
    await collect(engine.generate(request(max_new_tokens=7, temperature=0.3, stop=("END",))))
    assert upstream.requests == [
        {
            "model": MODEL,
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 7,
            "temperature": 0.3,
            "top_p": GenerationParams.top_p,
            "stop": ["END"],
        }
    ]
    assert upstream.headers[0]["authorization"] == "Bearer upstream-key"


async def test_top_k_and_repetition_penalty_go_as_extensions_when_not_the_defaults(
    remote: Remote,
) -> None:
    engine, upstream = remote()
    await collect(engine.generate(request(top_k=5, repetition_penalty=1.2)))
    extensions = ("top_k", "repetition_penalty", "repeat_penalty")
    assert [upstream.requests[0][name] for name in extensions] == [5, 1.2, 1.2]


async def test_the_upstreams_finish_reason_and_usage_are_the_replys(remote: Remote) -> None:
    engine, _ = remote("Hello world", prompt_tokens=11)
    deltas, done = await collect(engine.generate(request(max_new_tokens=5)))
    assert "".join(deltas) == "Hello"
    assert (done.finish_reason, done.prompt_tokens, done.completion_tokens) == ("length", 11, 5)


@pytest.mark.parametrize("close", ["aclose", "cancel", "stop string"])
async def test_closing_the_stream_closes_the_upstream_request(remote: Remote, close: str) -> None:
    engine, upstream = remote("a" * 100 + " STOP " + "b" * 1000, step_delay=0.005)
    stream = engine.generate(request(stop=("STOP",)))
    if close == "aclose":
        assert isinstance(await anext(stream), TextDelta)
        await stream.aclose()
    elif close == "cancel":
        task = asyncio.create_task(collect(stream))
        await upstream.first_token_sent.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    else:
        _, done = await collect(stream)
        assert done.finish_reason == "stop"
    await upstream.disconnected.wait()
    assert upstream.steps < 200


async def test_an_upstream_that_is_down_is_unavailable(remote: Remote) -> None:
    engine = OpenAICompatibleEngine(f"http://127.0.0.1:{free_port()}/v1", MODEL)
    try:
        with pytest.raises(UpstreamUnavailable):
            await collect(engine.generate(request()))
        with pytest.raises(UpstreamUnavailable):
            await engine.check_ready()
    finally:
        await engine.aclose()


@pytest.mark.parametrize(
    "failure",
    [
        {"status": 500},
        {"status": 503},
        {"status": 401},
        {"body": b"<html>not a stream</html>"},
        {"body": b'data: {"choices": [{"delta": {"role": "assistant"}}]}\n\n'},  # no finish
        {"body": b"data: [DONE]\n\n"},  # done, and no finish
        {"fail_at_step": 0},
        {"step_delay": 5.0, "engine_options": {"timeout": 0.1}},
    ],
    ids=["500", "503", "401", "malformed", "truncated", "no finish", "error object", "timeout"],
)
async def test_a_failure_before_the_first_token_is_upstream_unavailable(
    remote: Remote, failure: dict[str, object]
) -> None:
    engine, _ = remote(**failure)
    with pytest.raises(UpstreamUnavailable) as caught:
        await collect(engine.generate(request()))
    assert caught.value.status == 503 and caught.value.retry_after


async def test_it_refuses_to_continue_a_reply_rather_than_start_a_new_one(remote: Remote) -> None:
    engine, upstream = remote()
    assert engine.continues_replies is False  # the chat handler refuses a continue with 422
    going_on = GenerationRequest("", GenerationParams(), MESSAGES, assistant_prefix="Once upon")
    with pytest.raises(ValueError, match="cannot continue"):
        await collect(engine.generate(going_on))
    assert upstream.requests == []


async def test_a_request_the_upstream_refuses_is_invalid(remote: Remote) -> None:
    engine, _ = remote(status=422)
    with pytest.raises(InvalidRequest):
        await collect(engine.generate(request(top_k=5)))


async def test_a_stream_cut_after_the_first_token_is_an_error(remote: Remote) -> None:
    engine, _ = remote(body=HI.encode())
    deltas: list[str] = []
    with pytest.raises(UpstreamError, match="ended early"):
        async for event in engine.generate(request()):
            assert isinstance(event, TextDelta)
            deltas.append(event.text)
    assert deltas == ["Hi"]


async def test_text_held_back_for_a_stop_string_is_not_the_first_token(remote: Remote) -> None:
    engine, _ = remote(body=HI.encode())
    with pytest.raises(UpstreamUnavailable):  # "Hi" may start "Hi!": nothing was sent
        await collect(engine.generate(request(stop=("Hi!",))))


async def test_cached_tokens_and_a_usage_on_the_finish_chunk_are_read(remote: Remote) -> None:
    finish = {"choices": [{"delta": {"content": "Hi"}, "finish_reason": "stop"}], "usage": USAGE}
    engine, _ = remote(body=f": comment\n\ndata: {json.dumps(finish)}\n\n".encode())
    deltas, done = await collect(engine.generate(request()))
    assert deltas == ["Hi"]
    assert (done.prompt_tokens, done.completion_tokens, done.cached_tokens) == (9, 1, 4)


async def test_a_reply_ends_with_its_finish_and_usage_not_with_the_body(remote: Remote) -> None:
    finish = {"choices": [{"delta": {}, "finish_reason": "stop"}], "usage": USAGE}
    linger = asyncio.Event()
    body = f"{HI}data: {json.dumps(finish)}\n\n".encode()
    engine, _ = remote(body=body, linger=linger)
    async with asyncio.timeout(30):  # a bound: the body has not ended, and will not
        deltas, done = await collect(engine.generate(request()))
    linger.set()
    assert (deltas, done.finish_reason, done.completion_tokens) == (["Hi"], "stop", 1)


async def test_a_finished_replys_body_that_does_not_end_is_closed(
    remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(completion_stream, "DRAIN_TIMEOUT", 0.01)
    finish = {"choices": [{"delta": {}, "finish_reason": "stop"}], "usage": USAGE}
    body = f"{HI}data: {json.dumps(finish)}\n\n".encode()
    engine, upstream = remote(body=body, linger=asyncio.Event())
    await collect(engine.generate(request()))
    await upstream.disconnected.wait()


async def test_it_is_ready_while_the_upstream_answers(remote: Remote) -> None:
    engine, upstream = remote()
    await engine.check_ready()
    await upstream.close()
    with pytest.raises(UpstreamUnavailable):
        await engine.check_ready()


def test_a_model_url_names_the_server_and_the_model() -> None:
    url = "openai+https://gpu.internal:8443/v1/#org/model:q4"
    assert parse_model_url(url) == ("https://gpu.internal:8443/v1", "org/model:q4")
    assert is_model_url(url) and not is_model_url("HuggingFaceTB/SmolLM2-135M-Instruct")
    for wrong in ("http://host/v1#m", "openai+http://host/v1", "openai+http:///v1#m"):
        with pytest.raises(ValueError):
            OpenAICompatibleEngine.from_url(wrong)


async def test_without_a_tokenizer_counts_are_a_conservative_estimate() -> None:
    engine = OpenAICompatibleEngine("http://127.0.0.1:1/v1", MODEL)
    await engine.aclose()
    renderer = engine.renderer
    assert isinstance(renderer, EstimatingRenderer) and isinstance(renderer, PromptRenderer)
    assert engine.stop_strings == renderer.stop_strings == ()
    assert [renderer.count_tokens(text) for text in ("", "abcd", "你好")] == [0, 2, 2]
    assert renderer.count_prompt_tokens(MESSAGES) == 3 + 3 + 2 * 8 + 32  # 9 and 8 bytes


@pytest.mark.model
def test_the_estimate_is_above_the_bundled_models_count_for_english_and_code() -> None:
    from transformers import AutoTokenizer

    from chatstream.engines.rendering import ChatTemplateRenderer
    from chatstream.model import default_cache_dir

    exact = ChatTemplateRenderer(AutoTokenizer.from_pretrained(default_cache_dir()))
    estimate = EstimatingRenderer()
    texts = (
        "Write a long, detailed essay about the history of the Roman Empire.",
        "def fitted(messages):\n    return [m for m in messages if m['role'] != 'system']\n",
    )
    for text in texts:
        assert estimate.count_tokens(text) >= exact.count_tokens(text)
        for messages in (
            [{"role": "user", "content": text}],
            [*MESSAGES, {"role": "user", "content": text}],
        ):
            assert estimate.count_prompt_tokens(messages) >= exact.count_prompt_tokens(messages)


async def test_a_tokenizer_on_disk_counts_exactly(tmp_path: Path) -> None:
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    engine = OpenAICompatibleEngine("http://127.0.0.1:1/v1", MODEL, tokenizer=str(tmp_path))
    await engine.aclose()
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert engine.renderer.count_prompt_tokens(MESSAGES) == len(tokenizer.encode(prompt))
    assert engine.stop_strings == ("<|im_end|>",)
    with pytest.raises(ModelNotFoundError, match="without downloading"):
        OpenAICompatibleEngine("http://127.0.0.1:1/v1", MODEL, tokenizer=str(tmp_path / "none"))
