"""The engine contract (``chatstream.engines.base.Engine``), run against every engine.

Each engine joins through a factory in :data:`FACTORIES` that sets it up to reply a given text
and tells the tests how to watch it work (its decoding steps, the generations in flight, the
threads its model ran in). A new engine (a remote one, say) joins by adding its factory; what
only one engine does is tested in that engine's own file.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from chatstream.engines.base import (
    Engine,
    GenerationEvent,
    GenerationParams,
    GenerationRequest,
    TextDelta,
)
from chatstream.engines.batched import BatchedEngine
from chatstream.engines.hf import TransformersEngine
from chatstream.engines.mock import MockEngine, mock_reply
from chatstream.engines.remote import OpenAICompatibleEngine
from chatstream.engines.rendering import ChatTemplateRenderer

from ..tiny_model import TinyLlama, text_ids, tiny_tokenizer
from .fake_upstream import MODEL, FakeUpstream
from .streams import collect

TOKENIZER = tiny_tokenizer()
LONG_REPLY = "a" * 200


@dataclass
class Subject:
    """An engine set up to reply :attr:`reply` in full (:attr:`reply_tokens` tokens, its end
    included) to :meth:`request`, whose prompt is :attr:`prompt_tokens` tokens long."""

    engine: Engine
    messages: list[dict[str, str]]
    reply: str
    reply_tokens: int
    steps: Callable[[], int]  # decoding steps run so far
    in_flight: Callable[[], int]  # generations running now
    threads: Callable[[], set[int]] = set  # the threads the model ran in

    def request(self, max_new_tokens: int = 256, stop: tuple[str, ...] = ()) -> GenerationRequest:
        prompt = self.engine.renderer.render(self.messages, add_generation_prompt=True)
        params = GenerationParams(max_new_tokens, temperature=0, stop=stop)
        return GenerationRequest(prompt, params, self.messages)

    @property
    def prompt_tokens(self) -> int:
        return self.engine.renderer.count_tokens(self.request().prompt)


Factory = Callable[[str, float, int | None], Subject]
"""``(reply, step_delay, fail_at_step) -> Subject``: ``step_delay`` seconds per decoding step;
``fail_at_step``: the model raises in that step of every generation."""


def token_engine_subject(engine_type: type[TransformersEngine] | type[BatchedEngine]) -> Factory:
    def make(reply: str, step_delay: float, fail_at_step: int | None) -> Subject:
        model = TinyLlama(text_ids(reply), step_delay=step_delay, fail_at_step=fail_at_step)
        engine = engine_type(model, TOKENIZER, slots=1)
        return Subject(
            engine,
            [{"role": "user", "content": "hi"}],
            reply,
            len(text_ids(reply)) + 1,  # and the eos
            steps=lambda: model.steps,
            in_flight=lambda: model.in_flight,
            threads=lambda: model.threads,
        )

    return make


class CountingMockEngine(MockEngine):
    """The mock engine, counting its token steps and its running generations."""

    def __init__(self, token_delay: float) -> None:
        super().__init__(token_delay)
        self.steps = 0
        self.in_flight = 0

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        self.in_flight += 1
        try:
            async with contextlib.aclosing(super().generate(request)) as events:
                async for event in events:
                    yield event
        finally:
            self.in_flight -= 1

    async def _wait_one_token(self) -> bool:
        self.steps += 1
        return await super()._wait_one_token()


def mock_subject(reply: str, step_delay: float, fail_at_step: int | None) -> Subject:
    if fail_at_step is not None:
        pytest.skip("the mock engine runs no model that could fail")
    engine = CountingMockEngine(step_delay)
    messages = [{"role": "user", "content": reply}]  # the mock echoes it, then its filler
    tokens = mock_reply(messages)
    return Subject(
        engine,
        messages,
        "".join(tokens),
        len(tokens),
        steps=lambda: engine.steps,
        in_flight=lambda: engine.in_flight,
    )


class CountingRemoteEngine(OpenAICompatibleEngine):
    """The remote engine in front of its own :class:`FakeUpstream` (closed with it), counting
    its running generations."""

    def __init__(self, upstream: FakeUpstream) -> None:
        super().__init__(upstream.base_url, MODEL, tokenizer=TOKENIZER)
        self.upstream = upstream
        self.in_flight = 0

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        self.in_flight += 1
        try:
            async with contextlib.aclosing(super().generate(request)) as events:
                async for event in events:
                    yield event
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        await super().aclose()
        await self.upstream.close()


def remote_subject(*, usage: bool) -> Factory:
    """The remote engine, its fake upstream running the tiny tokenizer's "model"; with
    ``usage``, the upstream counts the tokens, else the engine does."""

    def make(reply: str, step_delay: float, fail_at_step: int | None) -> Subject:
        messages = [{"role": "user", "content": "hi"}]
        prompt_tokens = ChatTemplateRenderer(TOKENIZER).count_prompt_tokens(messages)
        upstream = FakeUpstream(
            reply,
            step_delay=step_delay,
            fail_at_step=fail_at_step,
            usage=usage,
            prompt_tokens=prompt_tokens,
        )
        engine = CountingRemoteEngine(upstream)
        return Subject(
            engine,
            messages,
            reply,
            len(text_ids(reply)),
            steps=lambda: upstream.steps,
            in_flight=lambda: engine.in_flight,
        )

    return make


FACTORIES: dict[str, Factory] = {
    "TransformersEngine": token_engine_subject(TransformersEngine),
    "BatchedEngine": token_engine_subject(BatchedEngine),
    "MockEngine": mock_subject,
    "OpenAICompatibleEngine": remote_subject(usage=True),
    "OpenAICompatibleEngine-counting": remote_subject(usage=False),
}

SubjectFactory = Callable[..., Subject]


@pytest.fixture(params=list(FACTORIES))
async def subject_for(request: pytest.FixtureRequest) -> AsyncIterator[SubjectFactory]:
    """``subject_for(reply, step_delay=0, fail_at_step=None)``; its engine is closed after the
    test."""
    subjects: list[Subject] = []

    def make(reply: str, step_delay: float = 0.0, fail_at_step: int | None = None) -> Subject:
        subjects.append(FACTORIES[request.param](reply, step_delay, fail_at_step))
        return subjects[-1]

    yield make
    for subject in subjects:
        await subject.engine.aclose()


async def test_it_is_an_engine_that_renders_its_prompts(subject_for: SubjectFactory) -> None:
    subject = subject_for("Hi!")
    engine = subject.engine
    assert isinstance(engine, Engine)
    assert engine.slots >= 1
    assert engine.model_name
    assert engine.stop_strings == engine.renderer.stop_strings
    assert engine.renderer.render(subject.messages, add_generation_prompt=True)


async def test_deltas_are_whole_characters_that_join_into_the_reply(
    subject_for: SubjectFactory,
) -> None:
    subject = subject_for("héllo 你好 😀!")
    deltas, done = await collect(subject.engine.generate(subject.request()))
    assert "".join(deltas) == subject.reply
    assert all(delta and "\ufffd" not in delta for delta in deltas)
    assert (done.finish_reason, done.prompt_tokens) == ("stop", subject.prompt_tokens)
    assert done.completion_tokens == subject.reply_tokens


async def test_max_new_tokens_ends_with_finish_length(subject_for: SubjectFactory) -> None:
    subject = subject_for("Hello world, and more words to come")
    deltas, done = await collect(subject.engine.generate(subject.request(max_new_tokens=3)))
    assert subject.reply.startswith("".join(deltas))
    assert len("".join(deltas)) < len(subject.reply)
    assert (done.finish_reason, done.completion_tokens) == ("length", 3)


async def test_a_stop_string_ends_the_reply_and_is_never_emitted(
    subject_for: SubjectFactory,
) -> None:
    subject = subject_for("Hello world. STOP here")
    deltas, done = await collect(subject.engine.generate(subject.request(stop=("STOP",))))
    assert "".join(deltas) == "Hello world. "
    assert done.finish_reason == "stop"


async def test_closing_the_stream_stops_it_within_one_step_and_frees_its_slot(
    subject_for: SubjectFactory,
) -> None:
    subject = subject_for(LONG_REPLY, step_delay=0.005)
    stream = subject.engine.generate(subject.request())
    assert isinstance(await anext(stream), TextDelta)
    steps_at_close = subject.steps()
    await stream.aclose()
    assert subject.steps() <= steps_at_close + 1
    assert subject.in_flight() == 0
    deltas, done = await collect(subject.engine.generate(subject.request(max_new_tokens=3)))
    assert (len(deltas), done.finish_reason) == (3, "length")


async def test_cancelling_the_consumer_stops_it_within_one_step(
    subject_for: SubjectFactory,
) -> None:
    subject = subject_for(LONG_REPLY, step_delay=0.005)
    first_delta = asyncio.Event()

    async def consume() -> None:
        async for _ in subject.engine.generate(subject.request()):
            first_delta.set()

    task = asyncio.create_task(consume())
    await first_delta.wait()
    steps_at_cancel = subject.steps()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert subject.steps() <= steps_at_cancel + 1
    assert subject.in_flight() == 0


async def test_closing_the_engine_ends_running_streams_cancelled(
    subject_for: SubjectFactory,
) -> None:
    subject = subject_for(LONG_REPLY, step_delay=0.005)
    stream = subject.engine.generate(subject.request())
    assert isinstance(await anext(stream), TextDelta)
    await subject.engine.aclose()
    deltas, done = await collect(stream)
    assert done.finish_reason == "cancelled"
    assert done.completion_tokens == 1 + len(deltas) < subject.reply_tokens
    with pytest.raises(RuntimeError, match="closed"):
        await anext(subject.engine.generate(subject.request()))


async def test_an_exception_in_the_model_surfaces_and_the_engine_goes_on(
    subject_for: SubjectFactory,
) -> None:
    subject = subject_for("Hi!", fail_at_step=2)
    deltas: list[str] = []
    with pytest.raises(RuntimeError, match="scripted failure at step 2"):
        async for event in subject.engine.generate(subject.request()):
            assert isinstance(event, TextDelta)
            deltas.append(event.text)
    assert deltas == ["H", "i"]
    deltas, done = await collect(subject.engine.generate(subject.request(max_new_tokens=2)))
    assert ("".join(deltas), done.finish_reason) == ("Hi", "length")


async def test_the_event_loop_stays_responsive_while_generating(
    subject_for: SubjectFactory,
) -> None:
    subject = subject_for("b " * 300, step_delay=0.001)
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(tick())
    _, done = await collect(subject.engine.generate(subject.request(max_new_tokens=200)))
    ticker.cancel()
    assert done.completion_tokens == 200
    assert threading.get_ident() not in subject.threads()  # the model runs off the loop
    gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
    assert len(ticks) > 20
    assert max(gaps) < 0.1
