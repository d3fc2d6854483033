"""One generation: queue, generate, stream to a sink, with interruptions honoured.

:class:`GenerationRun` is what every generating route shares. It waits for a permit in the
admission queue (reporting the position), runs the engine, writes the reply to a
:class:`~chatstream.chat.sink.ReplySink`, records the metrics, and stops the engine as soon as
it is interrupted (its client left, a hold was lost, the server shuts down). A subclass adds
what it holds around that through three hooks: :meth:`hold` (before queueing), :meth:`settle`
(once the reply is final) and :meth:`finished` (at the very end); a chat turn holds its
conversation's lease, stores the turn and runs the callback there.

Everything happens in :meth:`stream`, in one ``try``/``finally``, so whatever the end (success,
an interruption at any point, an engine error) the reply is settled, the permit and what the
run held are released, and ``finished`` runs once, in that order. The HTTP layer
(:mod:`chatstream.http.streaming`) wraps a run in a response and watches the client.

Why one module: the run's steps (queue, generate, settle, end) share its reply and its
interruption; apart, each would reach into the others' state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..engines.base import FinishReason, GenerationDone, GenerationRequest, TextDelta
from ..errors import ChatStreamError, GenerationFailed
from ..logs import log_stream
from .outcome import Outcome
from .services import Services
from .sink import ClientGone, QueueReporter, ReplySink, quietly

logger = logging.getLogger("chatstream")

NOT_COMPLETED = "the reply could not be completed"
Interruption = Literal["client_left", "stopped", "lease_lost", "shutdown"]


@dataclass(slots=True)
class Reply:
    """The reply as it comes, and how it ended."""

    parts: list[str] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    generation_started: bool = False

    @property
    def text(self) -> str:
        return "".join(self.parts)


class GenerationRun:
    """Streams the reply to ``generation`` once admission grants a permit. ``client`` is who
    asked (for the per-client limits); ``route`` names the run in the log."""

    def __init__(
        self,
        generation: GenerationRequest,
        services: Services,
        *,
        client: str | None = None,
        route: str = "",
    ) -> None:
        self.generation = generation
        self.engine = services.engine
        self.admission = services.admission
        self.metrics = services.metrics
        self.rate_limiter = services.rate_limiter
        self.times = services.times
        self.client = client
        self.route = route
        self.reply = Reply()
        self._work: asyncio.Task[Outcome] | None = None
        self._interruption: Interruption | None = None
        self._interruptible = True
        self._arrived = time.perf_counter()
        self._queue_wait = 0.0

    async def stream(self, sink: ReplySink) -> Outcome:
        """Run the generation into ``sink``; returns how it ended. If the calling task is
        cancelled (the server shutting down), the run is interrupted and cleans up first."""
        work = self._work = asyncio.create_task(self._run(sink))
        try:
            outcome = await asyncio.shield(work)
        except asyncio.CancelledError:
            self.interrupt("shutdown")
            await asyncio.wait({work})
            raise
        self.metrics.outcomes.labels(outcome.value).inc()
        log_stream(
            logger,
            {
                "message_id": self.generation.request_id,
                "route": self.route,
                "outcome": outcome.value,
                "finish_reason": self.reply.finish_reason,
                "prompt_tokens": self.reply.prompt_tokens,
                "completion_tokens": self.reply.completion_tokens,
                "cached_tokens": self.reply.cached_tokens,
                "queue_wait_ms": round(self._queue_wait * 1000, 1),
                "duration_ms": round((time.perf_counter() - self._arrived) * 1000, 1),
            },
        )
        await self.finished(outcome)
        return outcome

    def interrupt(self, reason: Interruption) -> None:
        """Stop the generation (within one decoding step); the first reason counts. Ignored
        once the reply is being settled."""
        if self._interruption is None and self._interruptible and self._work is not None:
            self._interruption = reason
            self._work.cancel()

    # -- what a subclass adds --------------------------------------------------------------------

    async def hold(self, stack: contextlib.AsyncExitStack) -> Sequence[asyncio.Event]:
        """Take what the run holds besides its permit, before it queues, on ``stack`` (left
        after the permit is released). Returns events whose setting means a hold was lost: the
        generation then stops as an error. A :class:`ChatStreamError` refuses the request."""
        return ()

    async def settle(self) -> bool:
        """Called once with the final reply, complete or not; False when it could not be kept
        (the stream then ends as an error)."""
        return True

    async def finished(self, outcome: Outcome) -> None:
        """Called once at the very end, after the response and every release."""

    def summary(self) -> dict[str, Any]:
        """What the sink's ``done`` reports."""
        return {
            "message_id": self.generation.request_id,
            "finish_reason": self.reply.finish_reason,
            "usage": {
                "prompt_tokens": self.reply.prompt_tokens,
                "completion_tokens": self.reply.completion_tokens,
                "cached_tokens": self.reply.cached_tokens,
            },
        }

    # -- the run ---------------------------------------------------------------------------------

    async def _run(self, sink: ReplySink) -> Outcome:
        try:
            outcome = await self._hold_queue_generate(sink)
        except ChatStreamError as exc:
            if not sink.started:
                await quietly(sink.reject(exc))
                return Outcome.REJECTED
            await quietly(sink.error(exc))
            outcome = (
                Outcome.UNKNOWN_ERROR_OCCURRED
                if self.reply.generation_started
                else Outcome.REJECTED
            )
        except asyncio.CancelledError:
            if self._interruption is None:
                raise
            outcome = self._interrupted_outcome()
            await self._tell_the_end(sink)
        except ClientGone:
            outcome = self._left_outcome()
        except Exception:
            logger.exception("generation %s failed", self.generation.request_id)
            if not sink.started:
                await quietly(sink.reject(ChatStreamError("the reply could not be generated")))
                return Outcome.UNKNOWN_ERROR_OCCURRED
            outcome = Outcome.UNKNOWN_ERROR_OCCURRED
        await quietly(sink.end())
        return outcome

    async def _tell_the_end(self, sink: ReplySink) -> None:
        """An interrupted reply ends, for whoever still follows it, as it was stored: ``done``
        (``cancelled``), or ``error`` (as does one whose permit or lease was lost before it was
        stored)."""
        lost = self._interruption == "lease_lost" and sink.started
        if self.reply.finish_reason == "error" or (lost and self.reply.finish_reason is None):
            await quietly(sink.error(GenerationFailed(NOT_COMPLETED)))
        elif self.reply.finish_reason is not None:
            await quietly(sink.done(self.summary()))

    async def _hold_queue_generate(self, sink: ReplySink) -> Outcome:
        if self.rate_limiter is not None and self.client is not None:
            await self.rate_limiter.hit(self.client)
        async with contextlib.AsyncExitStack() as stack:
            held = await self.hold(stack)
            reporter = QueueReporter(sink)
            self.metrics.generations_waiting.inc()
            queued_at = time.perf_counter()
            try:
                permit = await stack.enter_async_context(
                    self.admission.acquire(client=self.client, on_position=reporter.update)
                )
            finally:
                self._queue_wait = time.perf_counter() - queued_at
                self.metrics.queue_wait.observe(self._queue_wait)
                self.metrics.generations_waiting.dec()
                await reporter.stop()
            for lost in (*held, permit.lost):
                watcher = asyncio.create_task(self._interrupt_when(lost, "lease_lost"))
                stack.callback(watcher.cancel)
            self._raise_if_interrupted()
            started = time.perf_counter()
            try:
                with self.metrics.generations_active.track_inprogress():
                    await self._generate(sink)
                if self.times is not None:
                    self.times.add(time.perf_counter() - started)
            finally:
                self._interruptible = False
                if self.reply.parts or self.reply.finish_reason is not None:
                    self.reply.finish_reason = self._final_finish_reason()
                    self._count_missing_tokens()
                    if not await asyncio.shield(self.settle()):
                        self.reply.finish_reason = "error"
        if self.reply.finish_reason is None:
            # Interrupted before a single token: nothing to settle.
            return self._interrupted_outcome()
        if self.reply.finish_reason == "error":
            await sink.error(GenerationFailed(NOT_COMPLETED))
            return Outcome.UNKNOWN_ERROR_OCCURRED
        await sink.done(self.summary())
        return Outcome.SUCCESS

    async def _generate(self, sink: ReplySink) -> None:
        reply, metrics = self.reply, self.metrics
        reply.generation_started = True
        last_sent = self._arrived
        events = self.engine.generate(self.generation)
        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    self._raise_if_interrupted()
                    # Started at the engine's first event, not before: an engine that fails
                    # first (a remote one whose upstream is down) answers with its own error.
                    await sink.start()
                    if isinstance(event, TextDelta):
                        if event.text:
                            reply.parts.append(event.text)
                            await sink.delta(event.text)
                            now = time.perf_counter()
                            latency = metrics.inter_token_latency
                            if len(reply.parts) == 1:
                                latency = metrics.time_to_first_token
                            latency.observe(now - last_sent)
                            last_sent = now
                    elif isinstance(event, GenerationDone):
                        reply.finish_reason = event.finish_reason
                        reply.prompt_tokens = event.prompt_tokens
                        reply.completion_tokens = event.completion_tokens
                        reply.cached_tokens = event.cached_tokens
                        metrics.tokens_generated.inc(event.completion_tokens)
                        metrics.prompt_tokens.inc(event.prompt_tokens)
                        metrics.prompt_tokens_cached.inc(event.cached_tokens)
        except (asyncio.CancelledError, ClientGone):
            raise
        except Exception as exc:
            if isinstance(exc, ChatStreamError) and not reply.parts and not reply.finish_reason:
                raise  # before any text: the client gets this error instead of a reply
            logger.exception("generation of %s failed", self.generation.request_id)
            reply.finish_reason = "error"

    def _final_finish_reason(self) -> FinishReason:
        if self.reply.finish_reason is not None:
            return self.reply.finish_reason
        return "error" if self._interruption == "lease_lost" else "cancelled"

    def _count_missing_tokens(self) -> None:
        """Token counts of a reply the engine did not finish (cancelled, or failed)."""
        reply, renderer = self.reply, self.engine.renderer
        if not reply.prompt_tokens:
            messages = self.generation.messages
            reply.prompt_tokens = (
                renderer.count_prompt_tokens(messages)
                if messages
                else renderer.count_tokens(self.generation.prompt)
            )
        if not reply.completion_tokens and reply.parts:
            reply.completion_tokens = renderer.count_tokens(reply.text)

    # -- interruptions ---------------------------------------------------------------------------

    def _raise_if_interrupted(self) -> None:
        """Redis calls with a socket timeout can swallow a cancellation on Python 3.11
        (``asyncio.wait_for``); an interrupted stream must stop all the same."""
        if self._interruption is not None:
            raise asyncio.CancelledError()

    async def _interrupt_when(self, event: asyncio.Event, reason: Interruption) -> None:
        await event.wait()
        self.interrupt(reason)

    def _interrupted_outcome(self) -> Outcome:
        if self._interruption == "lease_lost":
            return Outcome.UNKNOWN_ERROR_OCCURRED
        return self._left_outcome()

    def _left_outcome(self) -> Outcome:
        if self.reply.parts:
            return Outcome.CLIENT_DISCONNECTED_WHILE_STREAMING
        return Outcome.CLIENT_DISCONNECTED_BEFORE_STREAMING
