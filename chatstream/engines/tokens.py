"""What both transformers engines share: generated token ids in, chat events out."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Protocol

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .base import FinishReason, GenerationDone, GenerationEvent, TextDelta
from .detokenize import IncrementalDetokenizer
from .stopping import StopStringFilter


class TokenSource(Protocol):
    """One generation's token ids as a worker produces them."""

    prompt_tokens: int

    async def receive(self) -> list[int] | None:
        """The next generated ids; None once the worker is done."""
        ...

    async def close(self) -> None:
        """Stop the generation (within one decoding step) and wait until it has."""
        ...


async def stream_reply(
    source: TokenSource,
    tokenizer: PreTrainedTokenizerBase,
    stop_strings: tuple[str, ...],
    end_token_ids: frozenset[int],
    engine_closed: Callable[[], bool],
) -> AsyncGenerator[GenerationEvent, None]:
    """Detokenize, cut at the first stop string, and end with how the reply finished."""
    detokenizer = IncrementalDetokenizer(tokenizer)
    stops = StopStringFilter(stop_strings)
    generated = 0
    last_id = None
    try:
        while (ids := await source.receive()) is not None:
            generated += len(ids)
            last_id = ids[-1]
            if text := stops.push(detokenizer.push(ids)):
                yield TextDelta(text)
            if stops.stopped:
                break
    finally:
        await source.close()
    if tail := stops.flush():
        yield TextDelta(tail)
    finish: FinishReason
    if stops.stopped or last_id in end_token_ids:
        finish = "stop"
    elif engine_closed():
        finish = "cancelled"
    else:
        finish = "length"
    yield GenerationDone(finish, source.prompt_tokens, generated)


def end_token_ids(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, stop_strings: tuple[str, ...]
) -> frozenset[int]:
    """The model's eos ids plus the stop strings that are single tokens (``<|im_end|>``)."""
    configured = model.generation_config.eos_token_id
    ids = [configured] if isinstance(configured, int) else list(configured or ())
    vocab = tokenizer.get_vocab()
    ids += [vocab[s] for s in stop_strings if s in vocab]
    return frozenset(ids)
