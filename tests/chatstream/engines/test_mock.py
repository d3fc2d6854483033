from __future__ import annotations

import asyncio
import time

import pytest

from chatstream.engines.base import Engine, GenerationParams, GenerationRequest
from chatstream.engines.mock import FILLER, MockEngine, mock_reply
from chatstream.engines.rendering import PlainRenderer

from .streams import collect

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Tell me a joke"},
    {"role": "assistant", "content": "No."},
    {"role": "user", "content": "hello there"},
]
PROMPT = PlainRenderer().render(MESSAGES, add_generation_prompt=True)
REPLY = "hello there " + " ".join(FILLER)


def request(params: GenerationParams | None = None) -> GenerationRequest:
    return GenerationRequest(PROMPT, params or GenerationParams(), MESSAGES)


def test_it_is_an_engine() -> None:
    engine = MockEngine(slots=3)
    assert isinstance(engine, Engine)
    assert (engine.model_name, engine.slots) == ("mock", 3)
    assert isinstance(engine.renderer, PlainRenderer)


async def test_reply_echoes_the_last_user_input_then_filler_one_word_per_delta() -> None:
    deltas, done = await collect(MockEngine(token_delay=0).generate(request()))
    assert "".join(deltas) == REPLY
    assert deltas == mock_reply(MESSAGES)
    assert deltas[:3] == ["hello", " there", " This"]
    assert done.finish_reason == "stop"
    assert done.prompt_tokens == len(PROMPT.split())
    assert done.completion_tokens == len(deltas)


async def test_the_echo_keeps_the_inputs_spacing_and_lines() -> None:
    text = "  # Title\n\n```py\nx  = 1\n```\n\n- item  "
    messages = [{"role": "user", "content": text}]
    deltas, _ = await collect(
        MockEngine(token_delay=0).generate(GenerationRequest("", messages=messages))
    )
    assert "".join(deltas) == text.strip() + " " + " ".join(FILLER)
    assert deltas[:3] == ["#", " Title", "\n\n```py"]


async def test_without_user_input_the_reply_is_the_filler() -> None:
    deltas, _ = await collect(MockEngine(token_delay=0).generate(GenerationRequest("")))
    assert "".join(deltas) == " ".join(FILLER)


async def test_one_token_per_token_delay() -> None:
    engine = MockEngine(token_delay=0.02)
    started = time.perf_counter()
    deltas, _ = await collect(engine.generate(request(GenerationParams(max_new_tokens=5))))
    assert len(deltas) == 5
    assert time.perf_counter() - started >= 5 * 0.02


async def test_closing_the_engine_ends_running_streams_cancelled_at_once() -> None:
    engine = MockEngine(token_delay=60)
    reading = asyncio.create_task(collect(engine.generate(request())))
    await asyncio.sleep(0)
    await engine.aclose()
    deltas, done = await asyncio.wait_for(reading, timeout=5)
    assert (deltas, done.finish_reason, done.completion_tokens) == ([], "cancelled", 0)
    with pytest.raises(RuntimeError, match="closed"):
        await anext(engine.generate(request()))
