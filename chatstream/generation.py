"""One generation as an ASGI response: queue, generate, stream, with the client watched.

:class:`GenerationStream` is what every generating route shares. It waits for a permit in the
admission queue (reporting the position), runs the engine, streams the reply through a
:class:`~chatstream.streaming.StreamWriter`, records the metrics, and stops the engine as soon
as the client leaves. A route adds what it holds around that through three hooks: :meth:`hold`
(before queueing), :meth:`settle` (once the reply is final) and :meth:`finished` (at the very
end); the session turn holds a lease, stores the turn and runs the callback there.

Everything happens inside the response's own ``__call__``, in one ``try``/``finally``, so whatever
the stream's end (success, the client leaving at any point, an engine error, the server shutting
down) the reply is settled, the permit and what the route held are released, and ``finished``
runs once, in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .admission.base import Admission
from .engines.base import Engine, FinishReason, GenerationDone, GenerationRequest, TextDelta
from .errors import ChatStreamError, GenerationFailed, error_response
from .logs import log_stream
from .metrics import Metrics
from .outcome import Outcome
from .streaming import ClientGone, StreamWriter

logger = logging.getLogger("chatstream")

KEEP_ALIVE_INTERVAL = 15.0

Interruption = Literal["client_left", "lease_lost", "shutdown"]

WriterFactory = Callable[[Send], StreamWriter]
"""Makes the writer of one response from its ``send``."""


@dataclass(slots=True)
class Reply:
    parts: list[str] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    generation_started: bool = False

    @property
    def text(self) -> str:
        return "".join(self.parts)


class GenerationStream(Response):
    """Streams the reply to ``generation`` once ``admission`` grants a permit."""

    def __init__(
        self,
        generation: GenerationRequest,
        *,
        engine: Engine,
        admission: Admission,
        metrics: Metrics,
        writer: WriterFactory,
    ) -> None:
        self.generation = generation
        self.engine = engine
        self.admission = admission
        self.metrics = metrics
        self.make_writer = writer
        self.status_code = 200
        self.background = None
        self._work: asyncio.Task[Outcome] | None = None
        self._interruption: Interruption | None = None
        self._interruptible = True
        self._arrived = time.perf_counter()
        self._queue_wait = 0.0
        self.reply = Reply()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        writer = self.make_writer(send)
        work = self._work = asyncio.create_task(self._run(writer, scope, receive, send))
        watcher = asyncio.create_task(self._watch_disconnect(receive))
        try:
            outcome = await asyncio.shield(work)
        except asyncio.CancelledError:
            self._interrupt("shutdown")
            await asyncio.wait({work})
            raise
        finally:
            watcher.cancel()
        self.metrics.outcomes.labels(outcome.value).inc()
        log_stream(
            logger,
            {
                "message_id": self.generation.request_id,
                "route": scope.get("path", ""),
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

    # -- what a route adds -----------------------------------------------------------------------

    async def hold(self, stack: contextlib.AsyncExitStack) -> Sequence[asyncio.Event]:
        """Take what the stream holds besides its permit, before it queues, on ``stack`` (left
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
        """What the writer's ``done`` reports."""
        return {
            "message_id": self.generation.request_id,
            "finish_reason": self.reply.finish_reason,
            "usage": {
                "prompt_tokens": self.reply.prompt_tokens,
                "completion_tokens": self.reply.completion_tokens,
                "cached_tokens": self.reply.cached_tokens,
            },
        }

    # -- the stream ------------------------------------------------------------------------------

    async def _run(
        self, writer: StreamWriter, scope: Scope, receive: Receive, send: Send
    ) -> Outcome:
        try:
            outcome = await self._hold_queue_generate(writer)
        except ChatStreamError as exc:
            if writer.started:
                await _quietly(writer.error(exc))
            else:
                await _quietly(exc.to_response()(scope, receive, send))
                return Outcome.REJECTED
            outcome = (
                Outcome.UNKNOWN_ERROR_OCCURRED
                if self.reply.generation_started
                else Outcome.REJECTED
            )
        except asyncio.CancelledError:
            if self._interruption is None:
                raise
            outcome = self._interrupted_outcome()
        except ClientGone:
            outcome = self._left_outcome()
        except Exception:
            logger.exception("generation %s failed", self.generation.request_id)
            if not writer.started:
                response = error_response(500, "internal_error", "the reply could not be generated")
                await _quietly(response(scope, receive, send))
                return Outcome.UNKNOWN_ERROR_OCCURRED
            outcome = Outcome.UNKNOWN_ERROR_OCCURRED
        if outcome in (Outcome.SUCCESS, Outcome.UNKNOWN_ERROR_OCCURRED, Outcome.REJECTED):
            await _quietly(writer.end())
        return outcome

    async def _hold_queue_generate(self, writer: StreamWriter) -> Outcome:
        async with contextlib.AsyncExitStack() as stack:
            held = await self.hold(stack)
            reporter = QueueReporter(writer)
            self.metrics.generations_waiting.inc()
            queued_at = time.perf_counter()
            try:
                permit = await stack.enter_async_context(
                    self.admission.acquire(on_position=reporter.update)
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
            await writer.start()
            try:
                with self.metrics.generations_active.track_inprogress():
                    await self._generate(writer)
            finally:
                self._interruptible = False
                if self.reply.parts or self.reply.finish_reason is not None:
                    self.reply.finish_reason = self._final_finish_reason()
                    self._count_missing_tokens()
                    if not await asyncio.shield(self.settle()):
                        self.reply.finish_reason = "error"
        if self.reply.finish_reason is None:
            # The client left, or a hold was lost, before a single token: nothing to settle.
            return self._interrupted_outcome()
        if self.reply.finish_reason == "error":
            await writer.error(GenerationFailed("the reply could not be completed"))
            return Outcome.UNKNOWN_ERROR_OCCURRED
        await writer.done(self.summary())
        return Outcome.SUCCESS

    async def _generate(self, writer: StreamWriter) -> None:
        reply, metrics = self.reply, self.metrics
        reply.generation_started = True
        last_sent = self._arrived
        events = self.engine.generate(self.generation)
        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    self._raise_if_interrupted()
                    if isinstance(event, TextDelta):
                        if event.text:
                            reply.parts.append(event.text)
                            await writer.delta(event.text)
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
        except Exception:
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
            reply.prompt_tokens = renderer.count_tokens(self.generation.prompt)
        if not reply.completion_tokens and reply.parts:
            reply.completion_tokens = renderer.count_tokens(reply.text)

    # -- interruptions ---------------------------------------------------------------------------

    def _interrupt(self, reason: Interruption) -> None:
        if self._interruption is None and self._interruptible and self._work is not None:
            self._interruption = reason
            self._work.cancel()

    def _raise_if_interrupted(self) -> None:
        """Redis calls with a socket timeout can swallow a cancellation on Python 3.11
        (``asyncio.wait_for``); an interrupted stream must stop all the same."""
        if self._interruption is not None:
            raise asyncio.CancelledError()

    async def _interrupt_when(self, event: asyncio.Event, reason: Interruption) -> None:
        await event.wait()
        self._interrupt(reason)

    async def _watch_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._interrupt("client_left")

    def _interrupted_outcome(self) -> Outcome:
        if self._interruption == "lease_lost":
            return Outcome.UNKNOWN_ERROR_OCCURRED
        return self._left_outcome()

    def _left_outcome(self) -> Outcome:
        if self.reply.parts:
            return Outcome.CLIENT_DISCONNECTED_WHILE_STREAMING
        return Outcome.CLIENT_DISCONNECTED_BEFORE_STREAMING


class QueueReporter:
    """Tells the client its queue position while it waits, with keep-alives in between."""

    def __init__(self, writer: StreamWriter, interval: float = KEEP_ALIVE_INTERVAL) -> None:
        self._writer = writer
        self._interval = interval
        self._position = 0
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._report())

    def update(self, position: int) -> None:
        self._position = position
        self._changed.set()

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ClientGone):
            await self._task

    async def _report(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._changed.wait()
            if self._changed.is_set():
                self._changed.clear()
                if self._position > 0:
                    await self._writer.queued(self._position)
            else:
                await self._writer.keep_alive()


async def _quietly(action: Any) -> None:
    """Send something to a client that may already have left."""
    with contextlib.suppress(ClientGone, OSError):
        await action
