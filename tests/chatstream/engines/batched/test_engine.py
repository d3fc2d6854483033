from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, cast

import pytest
import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from chatstream.engines.base import (
    GenerationEvent,
    GenerationParams,
    GenerationRequest,
    TextDelta,
)
from chatstream.engines.batched import BatchedEngine
from chatstream.engines.batched import engine as engine_module
from chatstream.engines.batched.prefix_cache import MIN_TOKENS
from chatstream.engines.hf import TransformersEngine
from chatstream.engines.rendering import ChatTemplateRenderer

from ...tiny_model import TinyLlama, text_ids, tiny_sliding_window_model, tiny_tokenizer
from ..streams import collect

TOKENIZER = tiny_tokenizer()
RENDERER = ChatTemplateRenderer(TOKENIZER)
SHORT, MEDIUM, LONG = "hi", "what is the weather like?", "tell me " * 12

EngineFactory = Callable[..., BatchedEngine]
Stream = AsyncGenerator[GenerationEvent, None]


def request(user_input: str = SHORT, max_new_tokens: int = 24, **params: Any) -> GenerationRequest:
    messages = [{"role": "user", "content": user_input}]
    prompt = RENDERER.render(messages, add_generation_prompt=True)
    generation = GenerationParams(max_new_tokens, **{"temperature": 0, **params})
    return GenerationRequest(prompt, generation, messages)


async def reference(model: TinyLlama, user_input: str, max_new_tokens: int, **params: Any) -> str:
    """The reply of TransformersEngine, which generates each request alone."""
    engine = TransformersEngine(model, TOKENIZER)
    try:
        deltas, _ = await collect(engine.generate(request(user_input, max_new_tokens, **params)))
    finally:
        await engine.aclose()
    return "".join(deltas)


async def read_text(stream: Stream, deltas: int) -> str:
    """The next ``deltas`` text deltas of a stream, joined."""
    texts = []
    for _ in range(deltas):
        event = await anext(stream)
        assert isinstance(event, TextDelta)
        texts.append(event.text)
    return "".join(texts)


async def finish(stream: Stream) -> str:
    deltas, _ = await collect(stream)
    return "".join(deltas)


def attentive_llama(**options: Any) -> TinyLlama:
    """A TinyLlama with sharpened attention, whose replies depend on the positions and the
    mask of the whole context (a plain random one mostly echoes its last token)."""
    model = TinyLlama(**options)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight *= 4
            layer.self_attn.k_proj.weight *= 4
    return model


class ShapeRecordingLlama(TinyLlama):  # type: ignore[no-untyped-call]
    """Records the input shape (rows, columns) of each forward pass."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shapes: list[tuple[int, int]] = []
        self._passed = threading.Condition()

    @property
    def batch_sizes(self) -> list[int]:
        return [rows for rows, _ in self.shapes]

    @property
    def prefills(self) -> list[tuple[int, int]]:
        """The shapes of the passes that ran more than one column (prefill chunks)."""
        return [shape for shape in self.shapes if shape[1] > 1]

    def wait_for_passes(self, passes: int) -> None:
        """Block until ``passes`` forward passes have started."""
        with self._passed:
            self._passed.wait_for(lambda: len(self.shapes) >= passes, timeout=10)

    def forward(self, *args: Any, **kwargs: Any) -> CausalLMOutputWithPast:
        with self._passed:
            self.shapes.append(tuple(kwargs["input_ids"].shape))
            self._passed.notify_all()
        return super().forward(*args, **kwargs)


class AttentiveRecordingLlama(ShapeRecordingLlama):  # type: ignore[no-untyped-call]
    """Records its passes, with the sharpened attention of :func:`attentive_llama`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        with torch.no_grad():
            for layer in self.model.layers:
                layer.self_attn.q_proj.weight *= 4
                layer.self_attn.k_proj.weight *= 4


@pytest.fixture
async def make_engine() -> AsyncIterator[EngineFactory]:
    """``make_engine(model, slots=8, prefill_tokens=256)``: an engine on the tiny tokenizer,
    closed after the test."""
    engines: list[BatchedEngine] = []

    def make(model: TinyLlama, *, slots: int = 8, prefill_tokens: int = 256) -> BatchedEngine:
        engines.append(BatchedEngine(model, TOKENIZER, slots=slots, prefill_tokens=prefill_tokens))
        return engines[-1]

    yield make
    for engine in engines:
        await engine.aclose()


def test_a_model_with_sliding_window_attention_is_refused() -> None:
    model = tiny_sliding_window_model()
    assert not BatchedEngine.can_batch(model)
    assert BatchedEngine.can_batch(TinyLlama())
    with pytest.raises(ValueError, match="sliding-window"):
        BatchedEngine(model, TOKENIZER)


async def test_greedy_replies_equal_transformers_engine_ones(make_engine: EngineFactory) -> None:
    model = TinyLlama(seed=7)
    engine = make_engine(model)
    for user_input in (SHORT, LONG):
        deltas, done = await collect(engine.generate(request(user_input)))
        assert "".join(deltas) == await reference(model, user_input, 24)
        assert (done.finish_reason, done.completion_tokens) == ("length", 24)


async def test_a_bfloat16_model_gives_the_replies_it_gives_alone(
    make_engine: EngineFactory,
) -> None:
    """Every tensor the engine makes follows the model's dtype and device (the KV cache's
    padding, the prefix cache's copies), with a prompt that starts like a cached one."""
    model = attentive_llama(seed=11)
    cast(Any, model).to(torch.bfloat16)
    engine = make_engine(model)
    for user_input in (LONG, LONG + " again", MEDIUM):
        deltas, _ = await collect(engine.generate(request(user_input, 16)))
        assert "".join(deltas) == await reference(model, user_input, 16)
    assert len(engine.prefix_cache) > 0


async def test_greedy_replies_do_not_change_as_requests_join_and_leave(
    make_engine: EngineFactory,
) -> None:
    """Rows join a running batch (its cache re-padded to a longer or shorter prompt), and leave
    it (at their max_new_tokens, or closed by their consumer) while others decode on."""
    model = attentive_llama(seed=3)
    engine = make_engine(model)
    first = engine.generate(request(MEDIUM, 40))
    text = await read_text(first, 3)
    longer = asyncio.create_task(finish(engine.generate(request(LONG, 30))))
    brief = asyncio.create_task(finish(engine.generate(request(SHORT, 6))))
    text += await read_text(first, 8)
    shorter = asyncio.create_task(finish(engine.generate(request(SHORT, 25))))
    closed = engine.generate(request(LONG + "?", 30))
    partial = await read_text(closed, 4)
    text += await read_text(first, 5)
    await closed.aclose()
    text += await finish(first)
    assert [text, await longer, await brief, await shorter] == [
        await reference(model, MEDIUM, 40),
        await reference(model, LONG, 30),
        await reference(model, SHORT, 6),
        await reference(model, SHORT, 25),
    ]
    assert (await reference(model, LONG + "?", 30)).startswith(partial)


async def test_concurrent_streams_share_forward_passes(make_engine: EngineFactory) -> None:
    model = ShapeRecordingLlama(step_delay=0.002)
    engine = make_engine(model, slots=3)
    inputs = [SHORT, MEDIUM, LONG, SHORT + "!"]
    replies = await asyncio.gather(*(finish(engine.generate(request(i, 12))) for i in inputs))
    assert replies == [await reference(model, i, 12) for i in inputs]
    assert max(model.batch_sizes) == 3  # the slots; the fourth request waited for a free row


def prompt_tokens(user_input: str) -> int:
    return len(TOKENIZER.encode(request(user_input).prompt, add_special_tokens=False))


def chunks(tokens: int, budget: int) -> list[tuple[int, int]]:
    """The passes that prefill one prompt of ``tokens`` tokens."""
    return [(1, min(budget, tokens - start)) for start in range(0, tokens, budget)]


def test_prefill_tokens_must_be_positive() -> None:
    with pytest.raises(ValueError, match="prefill_tokens"):
        BatchedEngine(TinyLlama(), TOKENIZER, prefill_tokens=0)


async def test_a_long_prompt_is_prefilled_in_chunks_to_the_same_reply(
    make_engine: EngineFactory,
) -> None:
    model = AttentiveRecordingLlama(seed=3)
    engine = make_engine(model, prefill_tokens=32)
    assert engine.prefill_tokens == 32
    deltas, done = await collect(engine.generate(request(LONG, 20)))
    passes = chunks(prompt_tokens(LONG), 32)
    assert model.shapes == passes + [(1, 1)] * 19  # the first token comes from the prefill
    assert (done.prompt_tokens, done.completion_tokens) == (prompt_tokens(LONG), 20)
    assert "".join(deltas) == await reference(model, LONG, 20)


async def test_running_rows_decode_between_the_chunks_of_a_long_prompt(
    make_engine: EngineFactory,
) -> None:
    model = AttentiveRecordingLlama(seed=3, step_delay=0.002)
    engine = make_engine(model, prefill_tokens=16)
    running = engine.generate(request(MEDIUM, 60))
    text = await read_text(running, 1)
    model.shapes.clear()
    joined = await finish(engine.generate(request(LONG, 3)))
    text += await finish(running)
    long_passes = [i for i, shape in enumerate(model.shapes) if shape[1] > 1]
    assert [model.shapes[i] for i in long_passes] == chunks(prompt_tokens(LONG), 16)
    for before, after in itertools.pairwise(long_passes):
        assert model.shapes[before + 1 : after] == [(1, 1)]  # one step of the running row
    assert [text, joined] == [
        await reference(model, MEDIUM, 60),
        await reference(model, LONG, 3),
    ]


async def test_a_burst_is_prefilled_in_budget_sized_groups_in_arrival_order(
    make_engine: EngineFactory,
) -> None:
    """Each group's rows stream their first token before the later groups are prefilled, and
    the running rows never wait for more than one prefill pass."""
    model = ShapeRecordingLlama(step_delay=0.02)
    budget = 2 * prompt_tokens("hi0")
    engine = make_engine(model, prefill_tokens=budget)
    passes_at_first_token: list[int] = []

    async def stream(user_input: str) -> str:
        events = engine.generate(request(user_input, 4))
        text = await read_text(events, 1)
        passes_at_first_token.append(len(model.shapes))
        return text + await finish(events)

    inputs = [f"hi{k}" for k in range(6)]
    tasks = []
    for user_input in inputs:  # in this order, each one queued before the next starts
        tasks.append(asyncio.create_task(stream(user_input)))
        await asyncio.sleep(0)
    replies = await asyncio.gather(*tasks)
    prefills, passes = model.prefills, len(model.shapes)
    assert all(rows * columns <= budget for rows, columns in prefills)
    assert sum(rows for rows, _ in prefills) == len(inputs)
    assert len(prefills) >= 3
    assert passes_at_first_token[0] < passes - 3  # long before the last group's prefill
    assert passes_at_first_token == sorted(passes_at_first_token)
    # Only newcomers run after the first group: the second follows at once. From then on the
    # running rows decode between any two prefill passes.
    prefill_passes = [i for i, (_, columns) in enumerate(model.shapes) if columns > 1]
    assert prefill_passes[:2] == [0, 1]
    assert all(b - a > 1 for a, b in itertools.pairwise(prefill_passes[1:]))
    assert replies == [await reference(model, i, 4) for i in inputs]


async def test_a_stream_closed_while_its_prompt_fills_leaves_within_one_pass(
    make_engine: EngineFactory,
) -> None:
    model = ShapeRecordingLlama(step_delay=0.01)
    engine = make_engine(model, prefill_tokens=8)
    stream = engine.generate(request(LONG, 10))
    task = asyncio.create_task(anext(stream))
    await asyncio.to_thread(model.wait_for_passes, 2)
    passes_at_cancel = len(model.shapes)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await stream.aclose()
    assert len(model.shapes) <= passes_at_cancel + 1 < len(chunks(prompt_tokens(LONG), 8))
    assert model.in_flight == 0
    deltas, done = await collect(engine.generate(request(SHORT, 3)))
    assert (len(deltas), done.finish_reason) == (3, "length")


def follow_up(
    first: GenerationRequest, reply: str, user_input: str, tokens: int
) -> GenerationRequest:
    """The next turn of ``first``'s conversation."""
    messages = [
        *first.messages,
        {"role": "assistant", "content": reply},
        {"role": "user", "content": user_input},
    ]
    prompt = RENDERER.render(messages, add_generation_prompt=True)
    return GenerationRequest(prompt, GenerationParams(tokens, temperature=0), messages)


def ids(prompt: str) -> list[int]:
    return list(TOKENIZER.encode(prompt, add_special_tokens=False))


def common_start(a: list[int], b: list[int]) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def token_count(prompt: str) -> int:
    return len(ids(prompt))


async def test_a_follow_up_turn_is_prefilled_from_where_it_differs(
    make_engine: EngineFactory,
) -> None:
    """The previous prompt and reply come from the prefix cache; the reply is the same."""
    model = AttentiveRecordingLlama(seed=3)
    engine = make_engine(model)
    first = request(MEDIUM, 20)
    reply = await finish(engine.generate(first))
    second = follow_up(first, reply, SHORT, 20)
    model.shapes.clear()
    stored = (len(engine.prefix_cache), engine.prefix_cache.nbytes)
    stream = engine.generate(second)
    first_delta = await read_text(stream, 1)
    # Its start was cached: the prompt is stored once, with the reply, when the turn ends.
    assert (len(engine.prefix_cache), engine.prefix_cache.nbytes) == stored
    deltas, done = await collect(stream)
    deltas.insert(0, first_delta)
    # The first turn's last token never went through the model: it is run again.
    cached = token_count(first.prompt) + 20 - 1
    assert model.shapes == [(1, token_count(second.prompt) - cached)] + [(1, 1)] * 19
    assert (done.prompt_tokens, done.completion_tokens) == (token_count(second.prompt), 20)
    assert done.cached_tokens == cached
    assert len(engine.prefix_cache) == 1  # the second turn's record replaced the first's
    assert engine.prefix_cache.nbytes > stored[1]
    reference_engine = TransformersEngine(model, TOKENIZER)
    try:
        expected, _ = await collect(reference_engine.generate(second))
    finally:
        await reference_engine.aclose()
    assert "".join(deltas) == "".join(expected)


async def test_a_group_mixes_prompts_with_and_without_a_cached_start(
    make_engine: EngineFactory,
) -> None:
    """Cached starts of different lengths, and none, are padded into one prefill pass."""
    model = AttentiveRecordingLlama(seed=5, step_delay=0.05)
    engine = make_engine(model)
    seed = request(LONG, 4)
    seed_reply = await finish(engine.generate(seed))
    blocker = engine.generate(request(SHORT, 200))  # the four arrive during one of its steps
    await read_text(blocker, 1)
    model.shapes.clear()
    inputs = [LONG + "and me", "why?", LONG[:40] + "?", SHORT]
    replies = await asyncio.gather(*(finish(engine.generate(request(i, 12))) for i in inputs))
    prefills = model.prefills
    await blocker.aclose()
    stored = [ids(seed.prompt) + text_ids(seed_reply)[:3], ids(request(SHORT).prompt)]
    new_tokens = []
    for user_input in inputs:
        prompt = ids(request(user_input).prompt)
        cached = min(max(common_start(prompt, s) for s in stored), len(prompt) - 1)
        new_tokens.append(len(prompt) - (cached if cached >= MIN_TOKENS else 0))
    assert new_tokens[1] == len(ids(request("why?").prompt))  # nothing cached
    assert prefills == [(4, max(new_tokens))]
    assert replies == [await reference(model, i, 12) for i in inputs]


async def test_a_zero_prefix_cache_prefills_every_prompt_whole(make_engine: EngineFactory) -> None:
    model = ShapeRecordingLlama()
    engine = BatchedEngine(model, TOKENIZER, prefix_cache_mb=0)
    try:
        for _ in range(2):
            await finish(engine.generate(request(LONG, 3)))
    finally:
        await engine.aclose()
    assert model.prefills == [(1, prompt_tokens(LONG))] * 2
    assert len(engine.prefix_cache) == 0
    with pytest.raises(ValueError, match="prefix_cache_mb"):
        BatchedEngine(model, TOKENIZER, prefix_cache_mb=-1)


class PrefillFailingLlama(TinyLlama):  # type: ignore[no-untyped-call]
    """Raises in every prefill pass (more than one column) while ``failing`` is set."""

    failing = False

    def forward(self, *args: Any, **kwargs: Any) -> CausalLMOutputWithPast:
        if self.failing and kwargs["input_ids"].shape[1] > 1:
            raise RuntimeError("prefill failed")
        return super().forward(*args, **kwargs)


async def test_a_failed_prefill_fails_only_its_requests(make_engine: EngineFactory) -> None:
    model = PrefillFailingLlama(seed=7, step_delay=0.002)
    engine = make_engine(model)
    running = engine.generate(request(MEDIUM, 30))
    text = await read_text(running, 1)
    model.failing = True
    with pytest.raises(RuntimeError, match="prefill failed"):
        await collect(engine.generate(request(LONG, 5)))
    model.failing = False
    text += await finish(running)
    assert text == await reference(model, MEDIUM, 30)


@pytest.mark.parametrize(
    "params",
    [
        {"temperature": 1.5, "top_k": 1},
        {"temperature": 0.7, "top_p": 1e-9},
        {"temperature": 0, "repetition_penalty": 1.5},
    ],
    ids=["top_k=1", "tiny top_p", "repetition penalty"],
)
async def test_each_stream_samples_with_its_own_params(
    make_engine: EngineFactory, params: dict[str, Any]
) -> None:
    model = TinyLlama(seed=7)
    engine = make_engine(model)
    free = engine.generate(request(LONG, 24, temperature=1.0, top_k=0, top_p=1.0))
    replies = await asyncio.gather(
        finish(engine.generate(request(MEDIUM, 24, **params))), finish(free)
    )
    assert replies[0] == await reference(model, MEDIUM, 24, **params)


async def test_closing_a_stream_frees_its_row_for_a_waiting_one(
    make_engine: EngineFactory,
) -> None:
    model = TinyLlama(step_delay=0.005)
    engine = make_engine(model, slots=1)
    stream = engine.generate(request(max_new_tokens=200))
    waiting = asyncio.create_task(finish(engine.generate(request(MEDIUM, 10))))
    await read_text(stream, 2)
    await stream.aclose()
    reply = await waiting
    assert model.steps < 20  # the closed stream's few steps and the waiting one's 10
    assert reply == await reference(model, MEDIUM, 10)


async def test_a_joining_request_streams_before_the_running_ones_finish(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine(TinyLlama(step_delay=0.005))
    running: list[str] = []
    started = asyncio.Event()

    async def consume() -> None:
        async for event in engine.generate(request(max_new_tokens=200)):
            assert isinstance(event, TextDelta)
            running.append(event.text)
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    deltas, done = await collect(engine.generate(request(MEDIUM, 5)))
    assert (len(deltas), done.finish_reason) == (5, "length")
    assert not task.done()
    assert len(running) < 200
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_closing_the_engine_ends_streams_cancelled_and_stops_its_thread() -> None:
    def workers() -> int:
        return sum(thread.name == "chatstream-batched" for thread in threading.enumerate())

    before = workers()
    engine = BatchedEngine(TinyLlama(step_delay=0.005), TOKENIZER, slots=1)
    assert workers() == before + 1
    running = engine.generate(request(max_new_tokens=200))
    waiting = asyncio.create_task(collect(engine.generate(request())))
    assert isinstance(await anext(running), TextDelta)
    await engine.aclose()
    assert workers() == before
    deltas, done = await collect(running)
    assert done.finish_reason == "cancelled"
    assert done.completion_tokens == 1 + len(deltas) < 200
    assert (await waiting)[1].finish_reason == "cancelled"
    with pytest.raises(RuntimeError, match="closed"):
        await anext(engine.generate(request()))


async def test_a_prefix_cache_that_cannot_store_is_emptied_and_streams_go_on(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = TinyLlama(seed=7)
    engine = make_engine(model)
    await finish(engine.generate(request(LONG, 4)))
    assert len(engine.prefix_cache) == 1

    def out_of_memory(*args: Any) -> None:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(engine.prefix_cache, "store", out_of_memory)
    deltas, done = await collect(engine.generate(request(MEDIUM, 6)))
    assert (len(deltas), done.finish_reason) == (6, "length")
    assert len(engine.prefix_cache) == 0
    assert "could not keep a prompt in the prefix cache" in caplog.text


async def test_an_unexpected_error_in_the_loop_fails_the_streams_in_flight_and_it_goes_on(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug outside the model's passes (here: joining the batch) must not kill the worker
    thread and leave every stream waiting forever."""
    engine = make_engine(TinyLlama(text_ids("Hi!")))

    def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(engine_module, "merge", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        await collect(engine.generate(request()))
    monkeypatch.undo()
    deltas, done = await collect(engine.generate(request()))
    assert ("".join(deltas), done.finish_reason) == ("Hi!", "stop")
    assert "the batched engine's loop failed" in caplog.text
