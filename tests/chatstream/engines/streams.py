"""Reading an engine's stream in tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

from chatstream.engines.base import GenerationDone, GenerationEvent, TextDelta


async def collect(stream: AsyncIterator[GenerationEvent]) -> tuple[list[str], GenerationDone]:
    """The stream's text deltas and its final event (which must come last, exactly once)."""
    deltas: list[str] = []
    done: GenerationDone | None = None
    async for event in stream:
        assert done is None, "an event came after GenerationDone"
        if isinstance(event, TextDelta):
            deltas.append(event.text)
        else:
            done = event
    assert done is not None, "the stream ended without GenerationDone"
    return deltas, done
