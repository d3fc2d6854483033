"""The batched engine: every stream of an instance shares the model through continuous batching.

One worker thread owns the model and runs a loop over a dynamic batch; this module is that
loop, gluing the parts that each hold one concern: the :mod:`.scheduler` decides what runs
each turn, :mod:`.kv` lays out the KV caches as rows join and leave, :mod:`.runner` runs the
forward passes, :mod:`.sampler` picks each row's next token, and the
:class:`~.prefix_cache.PrefixCache` gives a prompt that starts like a recent one (the shared
system prompt; the history that a conversation's next turn repeats) that start's keys and
values, so it is prefilled from where it differs. A row leaves the batch as soon as it ends or
its consumer goes away. Token ids reach each consumer through its
:class:`~chatstream.engines.channel.TokenChannel`; the consumer detokenizes and applies stop
strings, as in :class:`~chatstream.engines.hf.TransformersEngine`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import AsyncGenerator, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..base import GenerationEvent, GenerationRequest, PromptRenderer
from ..channel import post_all
from ..config import BatchingConfig
from ..tokens import TokenEngine
from . import kv, runner
from .kv import Batch, PrefillLayout, merge
from .prefix_cache import PrefixCache
from .sampler import next_tokens
from .scheduler import Scheduler
from .sequence import SequenceState

logger = logging.getLogger("chatstream")


class BatchedEngine(TokenEngine):
    """Streams replies of a Hugging Face causal LM, decoding all its streams as one batch.

    ``slots``, ``prefill_tokens`` and ``prefix_cache_mb`` are :class:`BatchingConfig`'s (its
    docstring says what each does). Finish reasons, token counts, stop strings, cancellation
    and errors behave as in :class:`~chatstream.engines.hf.TransformersEngine`; an exception
    raised by the model fails the requests that were in that forward pass, and the engine goes
    on with new ones. The model must use full attention in every layer (its KV cache is
    re-padded when rows join).
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
        self._config = BatchingConfig(slots, prefill_tokens, prefix_cache_mb)
        super().__init__(model, tokenizer, renderer=renderer, slots=slots, model_name=model_name)
        self._scheduler = Scheduler(self._config)
        self._prefixes = PrefixCache(int(prefix_cache_mb * 2**20))
        self._waiting: deque[SequenceState] = deque()
        self._wake = threading.Condition()
        self._worker = threading.Thread(target=self._run, name="chatstream-batched", daemon=True)
        self._worker.start()

    @staticmethod
    def can_batch(model: PreTrainedModel) -> bool:
        """Whether every layer of ``model`` uses full attention (no sliding window), so that
        its KV cache can be re-padded as rows join."""
        return kv.can_batch(model)

    @property
    def prefill_tokens(self) -> int:
        return self._config.prefill_tokens

    @property
    def prefix_cache(self) -> PrefixCache:
        """The stored prompts' keys and values (owned by the worker thread: read only)."""
        return self._prefixes

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        sequence = SequenceState(request)
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
        batch: Batch | None = None  # the rows that decode
        filling: PrefillLayout | None = None  # newcomers part-way through their prefill
        with torch.inference_mode():
            while (group := self._admit(batch, filling)) is not None:
                ready: Batch | None = None
                try:
                    if group:
                        filling = self._start(group)
                    if filling is not None:
                        decoding = len(batch.rows) if batch is not None else 0
                        filling, ready = self._fill(filling)
                        batch = merge(batch, ready)
                        if ready is not None and self._next_group_first(ready, decoding):
                            continue
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

    def _admit(
        self, batch: Batch | None, filling: PrefillLayout | None
    ) -> list[SequenceState] | None:
        """Wait for work; drop the waiting requests whose consumer left; unless a prefill is
        under way, take the next group that the scheduler admits. ``None``: the engine
        closed."""
        running = len(_rows(batch, filling))
        with self._wake:
            while not (self._closed or self._waiting or running):
                self._wake.wait()
            if self._closed:
                return None
            _, leaving = self._scheduler.partition(self._waiting)
            for sequence in [self._waiting[i] for i in leaving]:
                self._waiting.remove(sequence)
                sequence.end()
            if filling is not None:
                return []
            # Only this thread takes requests out: they stay first in line while unlocked.
            candidates = self._scheduler.candidates(self._waiting, running)
        admission = self._scheduler.admit(candidates, self._new_tokens)
        with self._wake:
            for sequence in (*admission.group, *admission.failed):
                self._waiting.remove(sequence)
        return admission.group

    def _new_tokens(self, sequence: SequenceState) -> int | None:
        """Tokenize a waiting request's prompt (once) and look its start up in the prefix
        cache; its prompt tokens left to run, or ``None`` (it ended) if it cannot run."""
        if not sequence.token_ids:
            try:
                sequence.token_ids = self._prompt_ids(sequence.request)
                if not sequence.token_ids:
                    raise ValueError("the prompt has no tokens")
            except Exception as exc:
                sequence.end(exc)
                return None
            sequence.channel.prompt_tokens = len(sequence.token_ids)
        sequence.prefix = self._prefixes.match(sequence.token_ids)
        sequence.channel.cached_tokens = sequence.prefix.tokens if sequence.prefix else 0
        return len(sequence.token_ids) - sequence.cached_tokens

    def _next_group_first(self, ready: Batch, decoding: int) -> bool:
        with self._wake:
            waiting = len(self._waiting)
        return self._scheduler.next_group_first(
            ready=len(ready.rows), decoding=decoding, waiting=waiting
        )

    def _start(self, group: list[SequenceState]) -> PrefillLayout | None:
        try:
            return PrefillLayout(self._model, group)
        except Exception as exc:
            for sequence in group:
                sequence.end(exc)
            return None

    def _fill(self, filling: PrefillLayout) -> tuple[PrefillLayout | None, Batch | None]:
        """Drop the rows whose consumer left, run the next prefill pass; once the prompts are
        in, sample the rows' first tokens. Returns what is still prefilling and what joins the
        running batch. If the pass fails, only its rows fail."""
        try:
            staying, leaving = self._scheduler.partition(filling.batch.rows)
            for i in leaving:
                filling.batch.rows[i].end()
            if not staying:
                return None, None
            filling.keep(staying)
            batch = filling.batch
            end = self._scheduler.prefill_end(
                rows=len(batch.rows), done=filling.done, width=batch.width
            )
            logits = runner.prefill(self._model, filling, end)
            if logits is None:
                return filling, None
            # A prompt with nothing cached is stored now, for the requests that share its start
            # (the system prompt) while it runs; every row is stored, with its reply, when it
            # ends (a prompt that found its start cached only then: one copy per turn).
            self._remember(batch, [i for i, row in enumerate(batch.rows) if not row.cached_tokens])
            return None, self._advance(batch, logits)
        except Exception as exc:
            for sequence in filling.batch.rows:
                sequence.end(exc)
            return None, None

    def _step(self, batch: Batch) -> Batch | None:
        """Drop the rows whose consumer left, then decode one token for every other row. If
        the step fails, its rows fail."""
        try:
            staying, leaving = self._scheduler.partition(batch.rows)
            self._remember(batch, leaving)
            for i in leaving:
                batch.rows[i].end()
            running = batch.select(staying)
            return self._advance(running, runner.decode(self._model, running)) if running else None
        except Exception as exc:
            for sequence in batch.rows:
                sequence.end(exc)
            return None

    def _advance(self, batch: Batch, logits: torch.Tensor) -> Batch | None:
        """Hand each row its next token; the rows that are done leave the batch (their prompt
        and reply are in the prefix cache before their stream ends)."""
        running, done = [], []
        tokens = next_tokens(logits, batch.rows)
        for i, (sequence, token) in enumerate(zip(batch.rows, tokens, strict=True)):
            sequence.token_ids.append(token)
            sequence.generated += 1
            if token in self._end_token_ids or sequence.generated >= sequence.params.max_new_tokens:
                done.append(i)
            else:
                running.append(i)
        post_all([(row.channel, [token]) for row, token in zip(batch.rows, tokens, strict=True)])
        self._remember(batch, done)
        for i in done:
            batch.rows[i].end()
        return batch.select(running)

    def _remember(self, batch: Batch, indices: Sequence[int]) -> None:
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


def _rows(*parts: Batch | PrefillLayout | None) -> list[SequenceState]:
    """The sequences of these batches and prefills."""
    batches = [part.batch if isinstance(part, PrefillLayout) else part for part in parts]
    return [row for batch in batches if batch is not None for row in batch.rows]
