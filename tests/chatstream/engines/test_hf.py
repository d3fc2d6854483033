from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable

import pytest
import torch

from chatstream.engines.base import Engine, GenerationParams, GenerationRequest, TextDelta
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


async def test_it_is_an_engine_with_the_models_end_of_turn(make_engine: EngineFactory) -> None:
    engine = make_engine(TinyLlama(), slots=2)
    assert isinstance(engine, Engine)
    assert (engine.slots, engine.model_name, engine.stop_strings) == (
        2,
        "TinyLlama",
        ("<|im_end|>",),
    )
    assert engine.renderer.render(MESSAGES, add_generation_prompt=True) == PROMPT


async def test_deltas_are_whole_characters_that_join_into_the_reply(
    make_engine: EngineFactory,
) -> None:
    text = "héllo 你好 😀!"
    deltas, done = await collect(make_engine(TinyLlama(text_ids(text))).generate(request()))
    assert deltas == list(text)
    assert (done.finish_reason, done.prompt_tokens) == ("stop", len(PROMPT_IDS))
    assert done.completion_tokens == len(text.encode()) + 1  # and the eos


async def test_max_new_tokens_ends_with_finish_length(make_engine: EngineFactory) -> None:
    engine = make_engine(TinyLlama(text_ids("Hello world")))
    deltas, done = await collect(engine.generate(request(GenerationParams(5, temperature=0))))
    assert "".join(deltas) == "Hello"
    assert (done.finish_reason, done.completion_tokens) == ("length", 5)


async def test_a_character_cut_by_max_new_tokens_is_dropped(make_engine: EngineFactory) -> None:
    engine = make_engine(TinyLlama(text_ids("a😀")))
    deltas, done = await collect(engine.generate(request(GenerationParams(3, temperature=0))))
    assert (deltas, done.finish_reason, done.completion_tokens) == (["a"], "length", 3)


async def test_a_stop_string_ends_the_reply_and_is_never_emitted(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine(TinyLlama(text_ids("Hello world. STOP here")))
    params = GenerationParams(temperature=0, stop=("STOP",))
    deltas, done = await collect(engine.generate(request(params)))
    assert "".join(deltas) == "Hello world. "
    assert (done.finish_reason, done.completion_tokens) == ("stop", len("Hello world. STOP"))


async def test_a_possible_stop_string_is_held_back_until_decided(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine(TinyLlama(text_ids("a wok, a world")))
    params = GenerationParams(temperature=0, stop=("world",))
    deltas, done = await collect(engine.generate(request(params)))
    assert deltas == ["a", " ", "wok", ",", " ", "a", " "]
    assert done.finish_reason == "stop"


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


async def test_closing_the_stream_stops_the_worker_within_one_step(
    make_engine: EngineFactory,
) -> None:
    model = TinyLlama(text_ids("a" * 200), step_delay=0.005)
    engine = make_engine(model)
    stream = engine.generate(request())
    assert await anext(stream) == TextDelta("a")
    steps_at_close = model.steps
    await stream.aclose()
    assert model.steps <= steps_at_close + 1
    assert model.in_flight == 0
    model.script = text_ids("ok")
    deltas, done = await collect(engine.generate(request()))
    assert (deltas, done.finish_reason) == (["o", "k"], "stop")


async def test_cancelling_the_consumer_stops_the_worker_within_one_step(
    make_engine: EngineFactory,
) -> None:
    model = TinyLlama(text_ids("a" * 200), step_delay=0.005)
    engine = make_engine(model)
    first_delta = asyncio.Event()

    async def consume() -> None:
        async for _ in engine.generate(request()):
            first_delta.set()

    task = asyncio.create_task(consume())
    await first_delta.wait()
    steps_at_cancel = model.steps
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert model.steps <= steps_at_cancel + 1
    assert model.in_flight == 0


async def test_closing_the_engine_ends_running_streams_cancelled(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine(TinyLlama(text_ids("a" * 200), step_delay=0.005))
    stream = engine.generate(request())
    assert await anext(stream) == TextDelta("a")
    await engine.aclose()
    deltas, done = await collect(stream)
    assert done.finish_reason == "cancelled"
    assert done.completion_tokens == 1 + len(deltas) < 200
    with pytest.raises(RuntimeError, match="closed"):
        await anext(engine.generate(request()))


async def test_an_exception_in_the_model_surfaces_to_the_consumer(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine(TinyLlama(text_ids("Hi!"), fail_at_step=2))
    deltas: list[str] = []
    with pytest.raises(RuntimeError, match="scripted failure at step 2"):
        async for event in engine.generate(request()):
            assert isinstance(event, TextDelta)
            deltas.append(event.text)
    assert deltas == ["H", "i"]


async def test_generations_run_concurrently_up_to_slots(make_engine: EngineFactory) -> None:
    model = TinyLlama(text_ids("abcde"), step_delay=0.01)
    engine = make_engine(model, slots=2)
    results = await asyncio.gather(*(collect(engine.generate(request())) for _ in range(3)))
    assert [("".join(deltas), done.finish_reason) for deltas, done in results] == [
        ("abcde", "stop")
    ] * 3
    assert model.max_in_flight == 2


async def test_the_event_loop_stays_responsive_while_generating(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine(TinyLlama())
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(tick())
    _, done = await collect(engine.generate(request(GenerationParams(200, temperature=0))))
    ticker.cancel()
    assert done.completion_tokens == 200
    gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
    assert len(ticks) > 20
    assert max(gaps) < 0.1
