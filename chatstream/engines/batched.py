"""The batched engine: every stream of an instance shares the model through continuous batching.

One worker thread owns the model and runs a loop over a dynamic batch. Each turn of the loop
runs at most one prefill pass, then one decoding step of the running rows (unless every running
row got its first token in that very pass and more requests wait: then the next group goes
first, and the running rows never wait for more than one prefill pass). Waiting requests are
admitted in arrival order, up to ``slots`` rows, as prefill groups of at most
``prefill_tokens`` (padded) new prompt tokens: a group's rows get their first tokens as soon as
its pass ends, without waiting for later groups, and its KV cache then joins the running
batch's (rows are padded to a common width, and a mask hides the padding). A prompt longer than
``prefill_tokens`` is prefilled in chunks, one per turn, so the running rows keep decoding while
it fills. A prompt that starts like a recent one (the shared system prompt; the history that a
conversation's next turn repeats) takes that start's keys and values from a
:class:`~chatstream.engines.prefix_cache.PrefixCache` and is prefilled from where it differs. A
row leaves the batch, its cache index-selected away, as soon as it ends or its consumer goes
away. Each row samples with its own parameters. Token ids reach each consumer through
``loop.call_soon_threadsafe`` into its own ``asyncio.Queue``; the consumer detokenizes and
applies stop strings, as in :class:`~chatstream.engines.hf.TransformersEngine`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections import deque
from collections.abc import AsyncGenerator, Sequence
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
from .channel import TokenChannel
from .config import BatchingConfig
from .prefix_cache import KeysAndValues, PrefixCache, PrefixMatch
from .tokens import TokenEngine

logger = logging.getLogger("chatstream")

# The keyword under which this transformers' models take their KV cache ("cache" from 5.x on).
_CACHE_KEYWORD: str = ALL_CACHE_NAMES[0]


class BatchedEngine(TokenEngine):
    """Streams replies of a Hugging Face causal LM, decoding all its streams as one batch.

    ``slots`` is the largest batch: requests beyond it wait for a row to free up.
    ``prefill_tokens`` bounds one prefill pass (rows times their padded new prompt tokens):
    smaller passes give the first tokens of a burst of requests sooner, and keep a long prompt
    from stalling the running rows for its whole prefill. ``prefix_cache_mb`` is the memory for
    the keys and values of recent prompts and replies, so that a prompt starting like one of
    them is prefilled only from where it differs (0 turns this off). Finish reasons, token
    counts, stop strings, cancellation and errors behave as in
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
        slots: int = BatchingConfig.slots,
        prefill_tokens: int = BatchingConfig.prefill_tokens,
        prefix_cache_mb: float = BatchingConfig.prefix_cache_mb,
        model_name: str | None = None,
    ) -> None:
        if not self.can_batch(model):
            raise ValueError(
                f"{type(model).__name__} has sliding-window or other non-full attention layers, "
                "which BatchedEngine cannot batch: use TransformersEngine"
            )
        if prefill_tokens < 1:
            raise ValueError("prefill_tokens must be >= 1")
        if prefix_cache_mb < 0:
            raise ValueError("prefix_cache_mb must be >= 0")
        super().__init__(model, tokenizer, renderer=renderer, slots=slots, model_name=model_name)
        self._prefill_tokens = prefill_tokens
        self._prefixes = PrefixCache(int(prefix_cache_mb * 2**20))
        self._waiting: deque[_Sequence] = deque()
        self._wake = threading.Condition()
        self._worker = threading.Thread(target=self._run, name="chatstream-batched", daemon=True)
        self._worker.start()

    @staticmethod
    def can_batch(model: PreTrainedModel) -> bool:
        """Whether every layer of ``model`` uses full attention (no sliding window), so that
        its KV cache can be re-padded as rows join."""
        layers = DynamicCache(config=model.config).layers
        return all(type(layer) is DynamicLayer for layer in layers)

    @property
    def prefill_tokens(self) -> int:
        return self._prefill_tokens

    @property
    def prefix_cache(self) -> PrefixCache:
        """The stored prompts' keys and values (owned by the worker thread: read only)."""
        return self._prefixes

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        sequence = _Sequence(request.prompt, request.params)
        with self._wake:
            if self._closed:
                raise RuntimeError("the engine is closed")
            self._waiting.append(sequence)
            self._wake.notify()
        events = self._reply(sequence.channel, request)
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
        batch: _Batch | None = None  # the rows that decode
        filling: _Prefill | None = None  # newcomers part-way through their prefill
        with torch.inference_mode():
            while (group := self._admit(batch, filling)) is not None:
                ready: _Batch | None = None
                try:
                    if group:
                        filling = self._start(group)
                    if filling is not None:
                        filling, ready = self._fill(filling)
                        if batch is None and ready is not None and self._more_waiting(ready):
                            batch = ready  # only newcomers run: the next group need not wait
                            continue
                        batch = _merge(batch, ready)
                    if batch is not None:
                        batch = self._step(batch)
                except Exception as exc:  # not the model's: fail what is in flight, go on
                    logger.exception("the batched engine's loop failed")
                    for sequence in _rows(batch, ready, filling):
                        sequence.end(exc)
                    batch = filling = None
        self._prefixes.clear()
        with self._wake:
            waiting = list(self._waiting)
        for sequence in (*_rows(batch, filling), *waiting):
            sequence.end()

    def _admit(self, batch: _Batch | None, filling: _Prefill | None) -> list[_Sequence] | None:
        """Wait for work; drop the waiting requests whose consumer left; unless a prefill is
        under way, take the next group that fits the free rows and the prefill budget.
        ``None``: the engine closed."""
        running = len(_rows(batch, filling))
        with self._wake:
            while not (self._closed or self._waiting or running):
                self._wake.wait()
            if self._closed:
                return None
            for sequence in [s for s in self._waiting if s.cancelled]:
                self._waiting.remove(sequence)
                sequence.end()
            if filling is not None:
                return []
            # Only this thread takes requests out: they stay first in line while unlocked.
            candidates = list(itertools.islice(self._waiting, self._slots - running))
        group: list[_Sequence] = []
        failed: list[_Sequence] = []
        width = 0  # the group's new tokens per row, padded
        for sequence in candidates:
            if not self._tokenize(sequence):
                failed.append(sequence)
                continue
            sequence.prefix = self._prefixes.match(sequence.token_ids)
            cached = sequence.prefix.tokens if sequence.prefix else 0
            sequence.channel.cached_tokens = cached
            wider = max(width, len(sequence.token_ids) - cached)
            if group and wider * (len(group) + 1) > self._prefill_tokens:
                break
            group.append(sequence)
            width = wider
        with self._wake:
            for sequence in (*group, *failed):
                self._waiting.remove(sequence)
        return group

    def _more_waiting(self, batch: _Batch) -> bool:
        """Whether requests wait that could join besides ``batch``'s rows."""
        with self._wake:
            return bool(self._waiting) and len(batch.rows) < self._slots

    def _tokenize(self, sequence: _Sequence) -> bool:
        """Give a waiting request its prompt's token ids (once); if that fails, end it."""
        if sequence.token_ids:
            return True
        try:
            sequence.token_ids = self._tokenizer.encode(sequence.prompt, add_special_tokens=False)
            if not sequence.token_ids:
                raise ValueError("the prompt has no tokens")
        except Exception as exc:
            sequence.end(exc)
            return False
        sequence.channel.prompt_tokens = len(sequence.token_ids)
        return True

    def _start(self, group: list[_Sequence]) -> _Prefill | None:
        try:
            return _Prefill(self._model, group)
        except Exception as exc:
            for sequence in group:
                sequence.end(exc)
            return None

    def _fill(self, filling: _Prefill) -> tuple[_Prefill | None, _Batch | None]:
        """Run the next prefill pass; once the prompts are in, sample the rows' first tokens.
        Returns what is still prefilling and what joins the running batch. If the pass fails,
        only its rows fail."""
        try:
            remaining = filling.without_cancelled()
            if remaining is None:
                return None, None
            logits = remaining.run(self._model, self._prefill_tokens)
            if logits is None:
                return remaining, None
            # A prompt with nothing cached is stored now, for the requests that share its start
            # (the system prompt) while it runs; every row is stored, with its reply, when it
            # ends (a prompt that found its start cached only then: one copy per turn).
            fresh = [
                i for i, row in enumerate(remaining.batch.rows) if not row.channel.cached_tokens
            ]
            self._remember(remaining.batch, fresh)
            return None, self._advance(remaining.batch, logits)
        except Exception as exc:
            for sequence in filling.batch.rows:
                sequence.end(exc)
            return None, None

    def _step(self, batch: _Batch) -> _Batch | None:
        """Drop the rows whose consumer left, then decode one token for every other row. If
        the step fails, its rows fail."""
        try:
            left = [i for i, row in enumerate(batch.rows) if row.cancelled]
            self._remember(batch, left)
            for i in left:
                batch.rows[i].end()
            running = batch.select([i for i in range(len(batch.rows)) if i not in left])
            return self._advance(running, running.decode(self._model)) if running else None
        except Exception as exc:
            for sequence in batch.rows:
                sequence.end(exc)
            return None

    def _advance(self, batch: _Batch, logits: torch.Tensor) -> _Batch | None:
        """Hand each row its next token; the rows that are done leave the batch (their prompt
        and reply are in the prefix cache before their stream ends)."""
        running, done = [], []
        tokens = _next_tokens(logits, batch.rows)
        for i, (sequence, token) in enumerate(zip(batch.rows, tokens, strict=True)):
            sequence.token_ids.append(token)
            sequence.generated += 1
            sequence.channel.post([token])
            if token in self._end_token_ids or sequence.generated >= sequence.params.max_new_tokens:
                done.append(i)
            else:
                running.append(i)
        self._remember(batch, done)
        for i in done:
            batch.rows[i].end()
        return batch.select(running)

    def _remember(self, batch: _Batch, indices: Sequence[int]) -> None:
        """Store these rows' keys and values in the prefix cache. The cache is an optimization:
        if storing fails (out of memory), it is emptied and the rows go on."""
        if not self._prefixes.capacity_bytes:
            return
        try:
            for i in indices:
                ids, layers = batch.row_cache(i)
                self._prefixes.store(ids, layers)
        except Exception:
            logger.exception("could not keep a prompt in the prefix cache; emptying it")
            self._prefixes.clear()


class _Sequence:
    """One request, shared by its consumer on the event loop and the worker thread."""

    def __init__(self, prompt: str, params: GenerationParams) -> None:
        self.prompt = prompt
        self.params = params
        self.channel = TokenChannel()
        self.generated = 0
        # The prompt's ids and the reply's so far (the repetition penalty's history).
        self.token_ids: list[int] = []
        # The start of the prompt found in the prefix cache, until the prefill takes it.
        self.prefix: PrefixMatch | None = None

    @property
    def cancelled(self) -> bool:
        return self.channel.cancelled.is_set()

    def end(self, error: Exception | None = None) -> None:
        """End the stream (once); from the worker thread."""
        self.prefix = None
        self.channel.end(error)


class _Batch:
    """Sequences decoded together: one row each in a KV cache as wide as ``valid``.

    ``valid[i, c]`` says whether cache column ``c`` of row ``i`` holds one of its tokens; the
    others are padding, which the attention mask hides. ``positions[i]`` is the position of row
    ``i``'s next token (how many tokens it has in the cache).
    """

    def __init__(
        self,
        rows: list[_Sequence],
        cache: DynamicCache,
        valid: torch.Tensor,
        positions: list[int],
    ) -> None:
        self.rows = rows
        self.cache = cache
        self.valid = valid
        self.positions = positions

    @property
    def width(self) -> int:
        return int(self.valid.shape[1])

    def decode(self, model: PreTrainedModel) -> torch.Tensor:
        """Feed each row its last token; return the next-token logits."""
        positions = [[p] for p in self.positions]
        self.positions = [p + 1 for p in self.positions]
        self.valid = torch.cat([self.valid, self.valid.new_ones(len(self.rows), 1)], dim=1)
        ids = [[row.token_ids[-1]] for row in self.rows]
        return self.forward(model, ids, positions, self.valid)

    def select(self, indices: list[int]) -> _Batch | None:
        """The batch with only these rows (``None`` if none), trimmed of the padding columns on
        the left that no row needs."""
        if len(indices) == len(self.rows):
            return self
        if not indices:
            return None
        used = self.valid[torch.tensor(indices, device=self.valid.device)].any(dim=0)
        return self.take(indices, trim=int(used.int().argmax()))  # the first column in use

    def take(self, indices: list[int], trim: int = 0) -> _Batch:
        """These rows, in this order, without the first ``trim`` cache columns."""
        index = torch.tensor(indices, device=self.valid.device)
        for layer in _layers(self.cache):
            layer.keys = layer.keys[index, :, trim:]
            layer.values = layer.values[index, :, trim:]
        rows = [self.rows[i] for i in indices]
        positions = [self.positions[i] for i in indices]
        return _Batch(rows, self.cache, self.valid[index, trim:], positions)

    def extend(self, other: _Batch) -> None:
        """Append ``other``'s rows, padding the narrower of the two caches on the left."""
        width = max(self.width, other.width)
        for mine, theirs in zip(_layers(self.cache), _layers(other.cache), strict=True):
            mine.keys = _stack(mine.keys, theirs.keys, width)
            mine.values = _stack(mine.values, theirs.values, width)
        self.valid = torch.cat([_pad_columns(self.valid, width), _pad_columns(other.valid, width)])
        self.rows = self.rows + other.rows
        self.positions = self.positions + other.positions

    def row_cache(self, i: int) -> tuple[list[int], KeysAndValues]:
        """Row ``i``'s token ids in the cache, and copies of their keys and values."""
        columns = self.valid[i]
        layers = [
            (layer.keys[i][:, columns], layer.values[i][:, columns])
            for layer in _layers(self.cache)
        ]
        return self.rows[i].token_ids[: self.positions[i]], layers

    def forward(
        self,
        model: PreTrainedModel,
        ids: list[list[int]],
        positions: list[list[int]],
        valid: torch.Tensor,
    ) -> torch.Tensor:
        """Run the model on ``ids`` (the cache's next columns; ``valid`` covers the cache up to
        and with them); return the next-token logits after their last column."""
        inputs: dict[str, Any] = {
            "input_ids": torch.tensor(ids, device=valid.device),
            "attention_mask": None if bool(valid.all()) else valid,
            "position_ids": torch.tensor(positions, device=valid.device),
            _CACHE_KEYWORD: self.cache,
            "use_cache": True,
            "logits_to_keep": 1,
        }
        logits = cast(torch.Tensor, model(**inputs).logits)
        return logits[:, -1].float()


class _Prefill:
    """Newcomers whose prompts go into a fresh KV cache, a chunk of columns per pass; once all
    are in, :attr:`batch` is ready to decode.

    Row ``i`` holds the start of its prompt found in the prefix cache (``r`` tokens,
    right-aligned in the first ``R`` columns, ``R`` the longest such start), then the rest of
    its prompt (``s`` tokens, right-aligned in the last ``S`` columns): its columns are ``R - r``
    padding, ``r`` cached, ``S - s`` padding, ``s`` new.
    """

    def __init__(self, model: PreTrainedModel, rows: list[_Sequence]) -> None:
        cached = [row.channel.cached_tokens for row in rows]
        new = [len(row.token_ids) - r for row, r in zip(rows, cached, strict=True)]
        self.cached, self.new = max(cached), max(new)
        cache = DynamicCache(config=model.config)
        if self.cached:
            self._load_prefixes(cache, rows)
        valid = torch.tensor(
            [
                [False] * (self.cached - r) + [True] * r + [False] * (self.new - s) + [True] * s
                for r, s in zip(cached, new, strict=True)
            ],
            device=model.device,
        )
        self.batch = _Batch(rows, cache, valid, [len(row.token_ids) for row in rows])
        self.starts = [self.batch.width - s for s in new]  # each row's first new column
        self.done = self.cached  # the columns already in the cache

    def _load_prefixes(self, cache: DynamicCache, rows: list[_Sequence]) -> None:
        """Put each row's cached start in the first columns, padded on the left."""
        template = next(row.prefix for row in rows if row.prefix is not None).layers
        for index, (k0, v0) in enumerate(template):
            heads, _, dim = k0.shape
            keys, values = [], []
            for row in rows:
                if row.prefix is None:
                    keys.append(k0.new_zeros(heads, self.cached, dim))
                    values.append(v0.new_zeros(heads, self.cached, dim))
                else:
                    k, v = row.prefix.layers[index]
                    keys.append(_pad_left(k, self.cached))
                    values.append(_pad_left(v, self.cached))
            cache.update(torch.stack(keys), torch.stack(values), index)
        for row in rows:
            row.prefix = None  # the cache holds its own copy now

    def run(self, model: PreTrainedModel, budget: int) -> torch.Tensor | None:
        """Run the next columns, at most ``budget`` tokens in all; the next-token logits once
        the prompts are all in, else ``None``."""
        batch = self.batch
        start = self.done
        end = min(batch.width, start + max(1, budget // len(batch.rows)))
        ids, positions = [], []
        for row, total, first in zip(batch.rows, batch.positions, self.starts, strict=True):
            # From its first new column on, column c holds the row's token c - offset.
            offset = batch.width - total
            columns = range(start, end)
            ids.append([row.token_ids[c - offset] if c >= first else 0 for c in columns])
            positions.append([c - offset if c >= first else 0 for c in columns])
        logits = batch.forward(model, ids, positions, batch.valid[:, :end])
        self.done = end
        return logits if end == batch.width else None

    def without_cancelled(self) -> _Prefill | None:
        """This prefill without the rows whose consumer left (they end); ``None`` if none is
        left."""
        batch = self.batch
        kept = [i for i, row in enumerate(batch.rows) if not row.cancelled]
        if len(kept) == len(batch.rows):
            return self
        for row in batch.rows:
            if row.cancelled:
                row.end()
        if not kept:
            return None
        self.batch = batch.take(kept)  # no trim: the columns not yet run are not in the cache
        self.starts = [self.starts[i] for i in kept]
        return self


class _KeysAndValues(Protocol):
    keys: torch.Tensor
    values: torch.Tensor


def _layers(cache: DynamicCache) -> list[_KeysAndValues]:
    """The cache's layers that hold keys and values (``DynamicLayer``: checked at the start)."""
    # An unused layer has no keys (transformers 4.56 has no ``is_initialized``).
    layers = cast(list[_KeysAndValues], cache.layers)
    return [layer for layer in layers if getattr(layer, "keys", None) is not None]


def _rows(*parts: _Batch | _Prefill | None) -> list[_Sequence]:
    """The sequences of these batches and prefills."""
    batches = [part.batch if isinstance(part, _Prefill) else part for part in parts]
    return [row for batch in batches if batch is not None for row in batch.rows]


def _merge(batch: _Batch | None, newcomers: _Batch | None) -> _Batch | None:
    if batch is None:
        return newcomers
    if newcomers is not None:
        batch.extend(newcomers)
    return batch


def _stack(mine: torch.Tensor, theirs: torch.Tensor, width: int) -> torch.Tensor:
    """Two ``(batch, heads, tokens, dim)`` cache tensors as one, left-padded to ``width``."""
    return torch.cat([_pad_left(mine, width), _pad_left(theirs, width)])


def _pad_columns(valid: torch.Tensor, width: int) -> torch.Tensor:
    """A ``(rows, columns)`` mask padded on the left with ``False`` to ``width`` columns."""
    padding = width - valid.shape[1]
    return torch.nn.functional.pad(valid, (padding, 0), value=False) if padding else valid


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
