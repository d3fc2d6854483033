from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import torch

from chatstream.engines.base import GenerationParams, GenerationRequest
from chatstream.engines.hf import TransformersEngine
from chatstream.engines.rendering import ChatTemplateRenderer

from ..tiny_model import TinyLlama, text_ids, tiny_tokenizer
from .streams import collect

MESSAGES = [{"role": "user", "content": "hi"}]
TOKENIZER = tiny_tokenizer()
PROMPT = ChatTemplateRenderer(TOKENIZER).render(MESSAGES, add_generation_prompt=True)
PROMPT_IDS = TOKENIZER.encode(PROMPT, add_special_tokens=False)
GREEDY = GenerationParams(temperature=0)

EngineFactory = Callable[..., TransformersEngine]


def request(params: GenerationParams = GREEDY) -> GenerationRequest:
    return GenerationRequest(PROMPT, params, MESSAGES)


@pytest.fixture
async def make_engine() -> AsyncIterator[EngineFactory]:
    """``make_engine(model, slots=1)``: an engine on the tiny tokenizer, closed after the test."""
    engines: list[TransformersEngine] = []

    def make(model: TinyLlama, *, slots: int = 1) -> TransformersEngine:
        engines.append(TransformersEngine(model, TOKENIZER, slots=slots))
        return engines[-1]

    yield make
    for engine in engines:
        await engine.aclose()


async def test_greedy_decoding_is_deterministic_and_matches_generate(
    make_engine: EngineFactory,
) -> None:
    model = TinyLlama(seed=7)
    engine = make_engine(model)
    params = GenerationParams(24, temperature=0)
    first, done = await collect(engine.generate(request(params)))
    second, _ = await collect(engine.generate(request(params)))
    with torch.inference_mode():
        ids = model.generate(torch.tensor([PROMPT_IDS]), max_new_tokens=24, do_sample=False)
    assert "".join(first) == "".join(second) == TOKENIZER.decode(ids[0, len(PROMPT_IDS) :])
    assert (done.finish_reason, done.completion_tokens) == ("length", 24)


@pytest.mark.parametrize(
    "params",
    [GenerationParams(24, temperature=1.5, top_k=1), GenerationParams(24, top_p=1e-9)],
    ids=["top_k=1", "tiny top_p"],
)
async def test_sampling_honours_top_k_and_top_p(
    make_engine: EngineFactory, params: GenerationParams
) -> None:
    engine = make_engine(TinyLlama(seed=7))
    greedy, _ = await collect(engine.generate(request(GenerationParams(24, temperature=0))))
    sampled, _ = await collect(engine.generate(request(params)))
    assert sampled == greedy


async def test_generations_run_concurrently_up_to_slots(make_engine: EngineFactory) -> None:
    model = TinyLlama(text_ids("abcde"), step_delay=0.01)
    engine = make_engine(model, slots=2)
    results = await asyncio.gather(*(collect(engine.generate(request())) for _ in range(3)))
    assert [("".join(deltas), done.finish_reason) for deltas, done in results] == [
        ("abcde", "stop")
    ] * 3
    assert model.max_in_flight == 2
