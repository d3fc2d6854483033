"""The transformers engine: a Hugging Face causal LM generating in worker threads.

Each generation runs ``model.generate`` in a thread pool of ``slots`` workers, so the event
loop never waits on a forward pass. Tokens come back through a
:class:`~chatstream.engines.channel.TokenChannel`; a stopping criterion watching its
``cancelled`` ends the worker within one decoding step once the consumer goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import cast

import torch
from transformers import (
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer
from transformers.generation.utils import GenerationMixin

from .base import (
    GenerationEvent,
    GenerationParams,
    GenerationRequest,
    PromptRenderer,
)
from .channel import TokenChannel
from .tokens import TokenEngine


class TransformersEngine(TokenEngine):
    """Streams replies of a Hugging Face causal LM (``AutoModelForCausalLM``).

    ``renderer`` defaults to the tokenizer's chat template. The model's end-of-turn strings
    (the renderer's ``stop_strings``) end a reply like the eos token does.
    A generation ends with finish ``"stop"`` (eos or a stop string), ``"length"``
    (``max_new_tokens``) or ``"cancelled"`` (the engine was closed). An exception raised by the
    model is re-raised to the consumer of the stream.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        renderer: PromptRenderer | None = None,
        slots: int = 1,
        model_name: str | None = None,
    ) -> None:
        super().__init__(model, tokenizer, renderer=renderer, slots=slots, model_name=model_name)
        self._executor = ThreadPoolExecutor(slots, thread_name_prefix="chatstream-generate")
        self._jobs: set[_Job] = set()

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        if self._closed:
            raise RuntimeError("the engine is closed")
        job = _Job(request, self._executor, self._run)
        self._jobs.add(job)
        events = self._reply(job, request)
        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    yield event
        finally:
            self._jobs.discard(job)

    async def aclose(self) -> None:
        self._closed = True
        for job in self._jobs:
            job.cancelled.set()
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    def _run(self, job: _Job) -> None:
        ids = torch.tensor(
            [self._prompt_ids(job.request)], dtype=torch.long, device=self._model.device
        )
        job.prompt_tokens = int(ids.shape[1])
        if job.cancelled.is_set():
            return
        with torch.inference_mode():
            cast(GenerationMixin, self._model).generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                generation_config=self._generation_config(job.request.params),
                streamer=_JobStreamer(job),
                stopping_criteria=StoppingCriteriaList([_CancelledCriteria(job.cancelled)]),
            )

    def _generation_config(self, params: GenerationParams) -> GenerationConfig:
        config = copy.deepcopy(self._model.generation_config)
        sampling = params.temperature > 0
        config.max_new_tokens = params.max_new_tokens
        config.do_sample = sampling
        config.temperature = params.temperature if sampling else None
        config.top_p = params.top_p if sampling else None
        config.top_k = params.top_k if sampling else None
        config.repetition_penalty = params.repetition_penalty
        config.eos_token_id = sorted(self._end_token_ids)
        config.pad_token_id = _pad_token_id(config, self._tokenizer, self._end_token_ids)
        return config


class _Job(TokenChannel):
    """One generation: its request, and the channel from the pool's worker that runs it."""

    def __init__(
        self,
        request: GenerationRequest,
        executor: ThreadPoolExecutor,
        run: Callable[[_Job], None],
    ) -> None:
        super().__init__()
        self.request = request
        self._future = executor.submit(run, self)
        # Runs when the worker returns or raises, and when the executor drops the job unstarted.
        self._future.add_done_callback(self._worker_done)

    def _worker_done(self, future: Future[None]) -> None:
        self.end(None if future.cancelled() else future.exception())

    async def close(self) -> None:
        self._future.cancel()  # a job still waiting for a worker never starts
        await super().close()


class _JobStreamer(BaseStreamer):
    """Posts each decoding step's token ids to the job (``generate`` puts the prompt first)."""

    def __init__(self, job: _Job) -> None:
        self._job = job
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if self._prompt_seen:
            self._job.post(value.reshape(-1).tolist())
        self._prompt_seen = True

    def end(self) -> None:
        """The job's end is posted when the worker returns, error or not."""


class _CancelledCriteria(StoppingCriteria):
    def __init__(self, cancelled: threading.Event) -> None:
        self._cancelled = cancelled

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None, **kwargs: object
    ) -> torch.BoolTensor:
        stop = self._cancelled.is_set()
        flags = torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)
        return cast(torch.BoolTensor, flags)


def _pad_token_id(
    config: GenerationConfig, tokenizer: PreTrainedTokenizerBase, end_ids: frozenset[int]
) -> int | None:
    for candidate in (config.pad_token_id, tokenizer.pad_token_id, *sorted(end_ids)):
        if isinstance(candidate, int):
            return candidate
    return None
