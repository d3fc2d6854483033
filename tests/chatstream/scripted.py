"""A scripted engine for handler tests: replies, pauses and failures on cue, and records what
it was asked and whether it was cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence

from chatstream.engines.base import (
    FinishReason,
    GenerationDone,
    GenerationEvent,
    GenerationRequest,
    TextDelta,
)
from chatstream.engines.rendering import PlainRenderer


class WordRenderer(PlainRenderer):
    """``role: content`` lines; one token per whitespace-separated word; an end of turn."""

    stop_strings: tuple[str, ...] = ("<|end|>",)


class ScriptedEngine:
    def __init__(
        self,
        deltas: Sequence[str] = ("Hello", " world"),
        *,
        finish_reason: FinishReason = "stop",
        pause_after: int | None = None,
        fail_after: int | None = None,
        slots: int = 4,
    ) -> None:
        self.deltas = list(deltas)
        self.finish_reason = finish_reason
        self.pause_after = pause_after
        self.fail_after = fail_after
        self._slots = slots
        self._renderer = WordRenderer()
        self.requests: list[GenerationRequest] = []
        self.resume = asyncio.Event()
        self.paused = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.running = 0

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def renderer(self) -> WordRenderer:
        return self._renderer

    @property
    def model_name(self) -> str:
        return "scripted"

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return self._renderer.stop_strings

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        self.requests.append(request)
        self.running += 1
        finished = False
        try:
            for index, text in enumerate(self.deltas):
                if index == self.fail_after:
                    raise RuntimeError("the scripted engine failed")
                if index == self.pause_after:
                    self.paused.set()
                    await self.resume.wait()
                yield TextDelta(text)
            finished = True
            yield GenerationDone(self.finish_reason, 3, len(self.deltas))
        finally:
            self.running -= 1
            if not finished:
                self.cancelled.set()

    async def aclose(self) -> None:
        pass
