"""The batched engine: every stream of an instance shares the model through continuous batching.

One worker thread owns the model and runs a decoding loop over a dynamic batch. Before each
step it drops the rows whose consumer went away and admits waiting requests up to ``slots``:
newcomers are prefilled together, then their KV cache is merged into the running batch's
(rows are left-padded to a common width and masked). A row leaves the batch, its cache
index-selected away, as soon as it ends. Each row samples with its own parameters.
Token ids reach each consumer through ``loop.call_soon_threadsafe`` into its own
``asyncio.Queue``; the consumer detokenizes and applies stop strings, as in
:class:`~chatstream.engines.hf.TransformersEngine`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.generation.utils import ALL_CACHE_NAMES

from .base import (
    GenerationEvent,
    GenerationParams,
    GenerationRequest,
    PromptRenderer,
)
from .tokens import TokenEngine

# The keyword under which this transformers' models take their KV cache ("cache" from 5.x on).
_CACHE_KEYWORD: str = ALL_CACHE_NAMES[0]


class BatchedEngine(TokenEngine):
    """Streams replies of a Hugging Face causal LM, decoding all its streams as one batch.

    ``slots`` is the largest batch: requests beyond it wait for a row to free up. Finish
    reasons, token counts, stop strings, cancellation and errors behave as in
    :class:`~chatstream.engines.hf.TransformersEngine`; an exception raised by the model fails
    the requests that were in that forward pass, and the engine goes on with new ones. The
    model must use full attention in every layer (its KV cache is re-padded when rows join).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        renderer: PromptRenderer | None = None,
        slots: int = 8,
        model_name: str | None = None,
    ) -> None:
        layers = DynamicCache(config=model.config).layers
        if any(type(layer) is not DynamicLayer for layer in layers):
            raise ValueError(
                f"{type(model).__name__} has sliding-window or other non-full attention layers, "
                "which BatchedEngine cannot batch: use TransformersEngine"
            )
        super().__init__(model, tokenizer, renderer=renderer, slots=slots, model_name=model_name)
        self._waiting: deque[_Sequence] = deque()
        self._wake = threading.Condition()
        self._worker = threading.Thread(target=self._run, name="chatstream-batched", daemon=True)
        self._worker.start()

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        sequence = _Sequence(request.prompt, request.params)
        with self._wake:
            if self._closed:
                raise RuntimeError("the engine is closed")
            self._waiting.append(sequence)
            self._wake.notify()
        events = self._reply(sequence, request)
        async with contextlib.aclosing(events):
            async for event in events:
                yield event

    async def aclose(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        await asyncio.to_thread(self._worker.join)

    # The worker thread.

    def _run(self) -> None:
        batch: _Batch | None = None
        with torch.inference_mode():
            while (newcomers := self._admit(batch)) is not None:
                try:
                    if newcomers:
                        batch = _merge(batch, self._prefill(newcomers))
                    if batch is not None:
                        batch = self._step(batch)
                except Exception as exc:  # the forward pass failed: so did its rows
                    for sequence in (*(batch.rows if batch else ()), *newcomers):
                        sequence.end(exc)
                    batch = None
        with self._wake:
            waiting = list(self._waiting)
        for sequence in (*(batch.rows if batch else ()), *waiting):
            sequence.end()

    def _admit(self, batch: _Batch | None) -> list[_Sequence] | None:
        """Wait for work; take the waiting requests that fit. ``None``: the engine closed."""
        running = len(batch.rows) if batch else 0
        with self._wake:
            while not (self._closed or self._waiting or running):
                self._wake.wait()
            if self._closed:
                return None
            for sequence in [s for s in self._waiting if s.cancelled]:
                self._waiting.remove(sequence)
                sequence.end()
            free = min(self._slots - running, len(self._waiting))
            return [self._waiting.popleft() for _ in range(free)]

    def _prefill(self, newcomers: list[_Sequence]) -> _Batch | None:
        """Prefill the newcomers together and sample their first tokens; if that fails, only
        the newcomers fail."""
        try:
            for sequence in newcomers:
                sequence.token_ids = self._tokenizer.encode(
                    sequence.prompt, add_special_tokens=False
                )
                sequence.prompt_tokens = len(sequence.token_ids)
            group, logits = _Batch.prefill(self._model, newcomers)
            return self._advance(group, logits)
        except Exception as exc:
            for sequence in newcomers:
                sequence.end(exc)
            return None

    def _step(self, batch: _Batch) -> _Batch | None:
        """Drop the rows whose consumer left, then decode one token for every other row."""
        kept = []
        for i, sequence in enumerate(batch.rows):
            if sequence.cancelled:
                sequence.end()
            else:
                kept.append(i)
        running = batch.select(kept)
        return self._advance(running, running.decode(self._model)) if running else None

    def _advance(self, batch: _Batch, logits: torch.Tensor) -> _Batch | None:
        """Hand each row its next token; the rows that are done leave the batch."""
        running = []
        tokens = _next_tokens(logits, batch.rows)
        for i, (sequence, token) in enumerate(zip(batch.rows, tokens, strict=True)):
            sequence.token_ids.append(token)
            sequence.generated += 1
            sequence.post([token])
            if token in self._end_token_ids or sequence.generated >= sequence.params.max_new_tokens:
                sequence.end()
            else:
                running.append(i)
        return batch.select(running)


@dataclass(frozen=True, slots=True)
class _End:
    error: Exception | None


class _Sequence:
    """One request, shared by its consumer on the event loop and the worker thread."""

    def __init__(self, prompt: str, params: GenerationParams) -> None:
        self.prompt = prompt
        self.params = params
        self.prompt_tokens = 0
        self.generated = 0
        # The prompt's ids and the reply's so far (the repetition penalty's history).
        self.token_ids: list[int] = []
        # Set by the consumer, read by the worker before each step.
        self.cancelled = False
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[list[int] | _End] = asyncio.Queue()
        self._ended = False  # the consumer has read the end
        self._ending = False  # the worker has posted the end

    def post(self, message: list[int] | _End) -> None:
        """Hand new token ids, or the end, to the consumer; from the worker thread."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, message)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled = True

    def end(self, error: Exception | None = None) -> None:
        """Post the end (once); from the worker thread."""
        if not self._ending:
            self._ending = True
            self.post(_End(error))

    async def receive(self) -> list[int] | None:
        """The next token ids, or ``None`` at the end; re-raises the worker's exception."""
        if self._ended:
            return None
        message = await self._queue.get()
        if isinstance(message, list):
            return message
        self._ended = True
        if message.error is not None:
            raise message.error
        return None

    async def close(self) -> None:
        """Leave the batch within one decoding step, and wait until the row is gone."""
        self.cancelled = True
        while not self._ended:
            message = await self._queue.get()
            self._ended = isinstance(message, _End)


class _Batch:
    """Sequences decoded together: one row each in a KV cache ``width`` tokens wide.

    Each row's ``lengths[i]`` tokens are right-aligned; the columns left of them are padding
    that the attention mask hides.
    """

    def __init__(
        self,
        rows: list[_Sequence],
        cache: DynamicCache,
        lengths: list[int],
        width: int,
        device: torch.device,
    ) -> None:
        self.rows = rows
        self.cache = cache
        self.lengths = lengths
        self.width = width
        self.device = device

    @classmethod
    def prefill(cls, model: PreTrainedModel, rows: list[_Sequence]) -> tuple[_Batch, torch.Tensor]:
        """Run the rows' prompts, left-padded to the longest; return the batch and its logits."""
        lengths = [len(row.token_ids) for row in rows]
        width = max(lengths)
        cache = DynamicCache(config=model.config)
        batch = cls(rows, cache, lengths, width, model.device)
        ids = [[0] * (width - n) + row.token_ids for n, row in zip(lengths, rows, strict=True)]
        positions = [[max(0, p - width + n) for p in range(width)] for n in lengths]
        return batch, batch._forward(model, ids, positions)

    def decode(self, model: PreTrainedModel) -> torch.Tensor:
        """Feed each row its last token; return the next-token logits."""
        positions = [[n] for n in self.lengths]
        self.lengths = [n + 1 for n in self.lengths]
        self.width += 1
        return self._forward(model, [[row.token_ids[-1]] for row in self.rows], positions)

    def select(self, indices: list[int]) -> _Batch | None:
        """The batch with only these rows (``None`` if none), trimmed of padding no row needs."""
        if len(indices) == len(self.rows):
            return self
        if not indices:
            return None
        lengths = [self.lengths[i] for i in indices]
        trim = self.width - max(lengths)
        index = torch.tensor(indices, device=self.device)
        for layer in _layers(self.cache):
            layer.keys = layer.keys[index, :, trim:]
            layer.values = layer.values[index, :, trim:]
        rows = [self.rows[i] for i in indices]
        return _Batch(rows, self.cache, lengths, self.width - trim, self.device)

    def extend(self, other: _Batch) -> None:
        """Append ``other``'s rows, padding the narrower of the two caches on the left."""
        width = max(self.width, other.width)
        for mine, theirs in zip(_layers(self.cache), _layers(other.cache), strict=True):
            mine.keys = _stack(mine.keys, theirs.keys, width)
            mine.values = _stack(mine.values, theirs.values, width)
        self.rows = self.rows + other.rows
        self.lengths = self.lengths + other.lengths
        self.width = width

    def _forward(
        self, model: PreTrainedModel, ids: list[list[int]], positions: list[list[int]]
    ) -> torch.Tensor:
        """Run the model on ``ids`` (``width`` and ``lengths`` already count them)."""
        mask = None
        if min(self.lengths) < self.width:
            lengths = torch.tensor(self.lengths, device=self.device)
            mask = torch.arange(self.width, device=self.device) >= (self.width - lengths)[:, None]
        inputs: dict[str, Any] = {
            "input_ids": torch.tensor(ids, device=self.device),
            "attention_mask": mask,
            "position_ids": torch.tensor(positions, device=self.device),
            _CACHE_KEYWORD: self.cache,
            "use_cache": True,
            "logits_to_keep": 1,
        }
        logits = cast(torch.Tensor, model(**inputs).logits)
        return logits[:, -1].float()


class _KeysAndValues(Protocol):
    is_initialized: bool
    keys: torch.Tensor
    values: torch.Tensor


def _layers(cache: DynamicCache) -> list[_KeysAndValues]:
    """The cache's layers that hold keys and values (``DynamicLayer``: checked at the start)."""
    return [layer for layer in cast(list[_KeysAndValues], cache.layers) if layer.is_initialized]


def _merge(batch: _Batch | None, newcomers: _Batch | None) -> _Batch | None:
    if batch is None:
        return newcomers
    if newcomers is not None:
        batch.extend(newcomers)
    return batch


def _stack(mine: torch.Tensor, theirs: torch.Tensor, width: int) -> torch.Tensor:
    """Two ``(batch, heads, tokens, dim)`` cache tensors as one, left-padded to ``width``."""
    return torch.cat([_pad_left(mine, width), _pad_left(theirs, width)])


def _pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    padding = width - tensor.shape[-2]
    return torch.nn.functional.pad(tensor, (0, 0, padding, 0)) if padding else tensor


def _next_tokens(logits: torch.Tensor, rows: Sequence[_Sequence]) -> list[int]:
    """Each row's next token: its repetition penalty, then greedy or sampled per its params."""
    for i, row in enumerate(rows):
        penalty = row.params.repetition_penalty
        if penalty != 1.0:
            seen = torch.tensor(row.token_ids, device=logits.device)
            scores = logits[i, seen]
            logits[i, seen] = torch.where(scores < 0, scores * penalty, scores / penalty)
    tokens = logits.argmax(dim=-1)
    sampled = [i for i, row in enumerate(rows) if row.params.temperature > 0]
    if sampled:
        index = torch.tensor(sampled, device=logits.device)
        tokens[index] = _sample(logits[index], [rows[i].params for i in sampled])
    return cast(list[int], tokens.tolist())


def _sample(logits: torch.Tensor, params: Sequence[GenerationParams]) -> torch.Tensor:
    """Sample one token per row with its temperature, then top-k, then top-p filtering.

    ``top_k`` 0 and ``top_p`` 1 turn their filter off, as in ``generate``; the most likely
    token always stays a candidate.
    """
    device = logits.device
    temperature = torch.tensor([p.temperature for p in params], device=device)
    top_k = torch.tensor([p.top_k or logits.shape[-1] for p in params], device=device)
    top_p = torch.tensor([p.top_p if p.top_p < 1 else 2.0 for p in params], device=device)
    scores, order = torch.sort(logits / temperature[:, None], dim=-1, descending=True)
    rank = torch.arange(scores.shape[-1], device=device)
    scores = scores.masked_fill(rank >= top_k[:, None], float("-inf"))
    probs = scores.softmax(dim=-1)
    more_likely = probs.cumsum(dim=-1) - probs
    probs = probs.masked_fill(more_likely >= top_p[:, None], 0.0)
    return order.gather(-1, torch.multinomial(probs, 1)).squeeze(-1)
