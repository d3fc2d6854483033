"""The mock engine: a deterministic streamed reply with no model, for UI work and load tests."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, Sequence

from .base import (
    FinishReason,
    GenerationDone,
    GenerationEvent,
    GenerationRequest,
    TextDelta,
)
from .rendering import PlainRenderer
from .stopping import StopStringFilter

FILLER = (
    *("This", "is", "the", "mock", "engine", "of", "chatstream,"),
    *("streaming", "one", "word", "at", "a", "time."),
)


def mock_reply(messages: Sequence[dict[str, str]]) -> list[str]:
    """The mock reply's tokens: the last user input word by word, its spacing and line breaks
    kept (so a test can have it say any text, markdown included), then :data:`FILLER`.

    Every token but the first carries the whitespace before it, so the tokens join into the
    reply: the input with its outer whitespace stripped, a space, the filler.
    """
    user_inputs = [m["content"] for m in messages if m.get("role") == "user"]
    said = re.findall(r"\s*\S+", user_inputs[-1].strip()) if user_inputs else []
    words = [*said, *(f" {word}" for word in FILLER)]
    return [words[0].lstrip(), *words[1:]]


def _after(tokens: list[str], prefix: str) -> list[str]:
    """The tokens that continue ``prefix``: those after it when it starts the reply, else the
    whole reply (as a model would go on in its own way)."""
    text = ""
    for index, token in enumerate(tokens):
        if text == prefix:
            return tokens[index:]
        text += token
    return [] if text == prefix else tokens


class MockEngine:
    """Streams :func:`mock_reply` at one token per ``token_delay`` seconds.

    It honours ``max_new_tokens`` (finish ``"length"``) and stop strings (finish ``"stop"``);
    the whole reply ends with finish ``"stop"``. ``aclose()`` ends running streams at once with
    finish ``"cancelled"``. ``slots`` is only reported: the mock has no limit of its own.
    """

    def __init__(self, token_delay: float = 0.02, slots: int = 8) -> None:
        if token_delay < 0:
            raise ValueError("token_delay must be >= 0")
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self._token_delay = token_delay
        self._slots = slots
        self._renderer = PlainRenderer()
        self._closed = asyncio.Event()

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def renderer(self) -> PlainRenderer:
        return self._renderer

    @property
    def model_name(self) -> str:
        return "mock"

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return self._renderer.stop_strings

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        if self._closed.is_set():
            raise RuntimeError("the engine is closed")
        params = request.params
        stops = StopStringFilter((*params.stop, *self.stop_strings))
        prompt_tokens = self._renderer.count_tokens(request.prompt)
        reply = _after(mock_reply(request.messages), request.assistant_prefix)
        generated = 0
        for token in reply[: params.max_new_tokens]:
            if not await self._wait_one_token():
                yield GenerationDone("cancelled", prompt_tokens, generated)
                return
            generated += 1
            text = stops.push(token)
            if text:
                yield TextDelta(text)
            if stops.stopped:
                yield GenerationDone("stop", prompt_tokens, generated)
                return
        if tail := stops.flush():
            yield TextDelta(tail)
        finish: FinishReason = "length" if len(reply) > params.max_new_tokens else "stop"
        yield GenerationDone(finish, prompt_tokens, generated)

    async def _wait_one_token(self) -> bool:
        """Sleep one token's delay; False when the engine was closed meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), self._token_delay)
        return not self._closed.is_set()

    async def aclose(self) -> None:
        self._closed.set()
