"""What both transformers engines share: generated token ids in, chat events out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import cast

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .base import (
    Engine,
    FinishReason,
    GenerationDone,
    GenerationEvent,
    GenerationParams,
    GenerationRequest,
    PromptRenderer,
    TextDelta,
)
from .channel import TokenChannel
from .detokenize import IncrementalDetokenizer
from .prompt_tokens import PromptTokenizer
from .rendering import ChatTemplateRenderer
from .stopping import StopStringFilter

WARM_UP_TOKENS = 8
"""The length of each warm-up reply (:meth:`TokenEngine.warm_up`)."""


async def stream_reply(
    source: TokenChannel,
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
    yield GenerationDone(finish, source.prompt_tokens, generated, source.cached_tokens)


def end_token_ids(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, stop_strings: tuple[str, ...]
) -> frozenset[int]:
    """The model's eos ids plus the stop strings that are single tokens (``<|im_end|>``)."""
    configured = model.generation_config.eos_token_id
    ids = [configured] if isinstance(configured, int) else list(configured or ())
    vocab = tokenizer.get_vocab()
    ids += [vocab[s] for s in stop_strings if s in vocab]
    return frozenset(ids)


class TokenEngine:
    """What an engine over a transformers model and its tokenizer holds: the renderer (the
    tokenizer's chat template by default), the end-of-turn stop strings and token ids, the
    slot count and the model's name; how it tokenizes a request's prompt, and how it turns
    its token ids into a reply's events.

    The prompt's ids come from the request's messages, laid out by the renderer (any
    :class:`PromptRenderer`, a user's own included) and tokenized by
    :class:`~chatstream.engines.prompt_tokens.PromptTokenizer`: the renderer's special tokens
    are special, those that message contents spell are plain text.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        renderer: PromptRenderer | None,
        slots: int,
        model_name: str | None,
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self._model = model
        self._tokenizer = tokenizer
        self._renderer = renderer if renderer is not None else ChatTemplateRenderer(tokenizer)
        self._prompt_tokenizer = PromptTokenizer(tokenizer)
        self._stop_strings = self._renderer.stop_strings
        self._end_token_ids = end_token_ids(model, tokenizer, self._stop_strings)
        self._slots = slots
        self._model_name = model_name or model.name_or_path or type(model).__name__
        self._closed = False

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def renderer(self) -> PromptRenderer:
        return self._renderer

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return self._stop_strings

    async def warm_up(self) -> None:
        """Generate short greedy replies (:data:`WARM_UP_TOKENS`) to a greeting: one alone,
        then two at once, so that what a model's first passes pay once (memory for the
        caches, kernels picked for the shapes, the chat template compiled; hundreds of
        milliseconds on a CPU) is paid before the first request, not by it. ``chatstream
        serve`` runs it before it listens, so ``/readyz`` answers only once it is done."""
        messages = [{"role": "user", "content": "Hello!"}]
        prompt = self._renderer.render(messages, add_generation_prompt=True)
        params = GenerationParams(WARM_UP_TOKENS, temperature=0)
        request = GenerationRequest(prompt, params, messages)

        async def reply() -> None:
            async for _ in cast(Engine, self).generate(request):  # each subclass's own
                pass

        await reply()
        await asyncio.gather(reply(), reply())

    def _prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The ids the model runs for ``request`` (see :class:`GenerationRequest`)."""
        if request.messages:
            ids = self._prompt_tokenizer.encode(
                self._renderer, request.messages, add_generation_prompt=True
            )
            return ids + self._prompt_tokenizer.encode_text(request.assistant_prefix)
        prompt: list[int] = self._tokenizer.encode(request.prompt, add_special_tokens=False)
        return prompt

    def _reply(
        self, source: TokenChannel, request: GenerationRequest
    ) -> AsyncGenerator[GenerationEvent, None]:
        stops = (*request.params.stop, *self._stop_strings)
        return stream_reply(
            source, self._tokenizer, stops, self._end_token_ids, lambda: self._closed
        )
