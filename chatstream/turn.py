"""One chat turn as an ASGI response: lease, queue, generate, stream, persist, release, callback.

Everything from the session lease on happens inside the response's own ``__call__``, in one
``try``/``finally``, so whatever the stream's end (success, the client leaving at any point, an
engine error, the server shutting down) the turn is persisted, the permit and the lease are
released, and the callback runs once, in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from sessions import Session, StoreUnavailable

from .admission.base import Admission
from .engines.base import Engine, FinishReason, GenerationDone, GenerationRequest, TextDelta
from .errors import ChatStreamError, error_response
from .lease import session_lease
from .metrics import Metrics
from .outcome import CompletionCallback, Outcome, run_callback
from .prompt import ChatPrompt
from .streaming import ClientGone, TextStreamWriter

logger = logging.getLogger("chatstream")

KEEP_ALIVE_INTERVAL = 15.0
SESSION_KEY = "chat_prompt"

Interruption = Literal["client_left", "lease_lost", "shutdown"]


@dataclass(slots=True)
class ChatTurn:
    """What the handler prepared before the response runs."""

    request: Request
    session: Session
    history: ChatPrompt  # the conversation with this turn's user message, not yet stored
    generation: GenerationRequest
    message_id: str
    callback: CompletionCallback | None


@dataclass(slots=True)
class Reply:
    parts: list[str] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generation_started: bool = False

    @property
    def text(self) -> str:
        return "".join(self.parts)


class ChatTurnResponse(Response):
    def __init__(
        self,
        turn: ChatTurn,
        *,
        engine: Engine,
        admission: Admission,
        lease_ttl: float,
        metrics: Metrics,
        writer_class: type[TextStreamWriter] = TextStreamWriter,
    ) -> None:
        self.turn = turn
        self.engine = engine
        self.admission = admission
        self.lease_ttl = lease_ttl
        self.metrics = metrics
        self.writer_class = writer_class
        self.status_code = 200
        self.background = None
        self._work: asyncio.Task[Outcome] | None = None
        self._interruption: Interruption | None = None
        self._interruptible = True
        self._arrived = time.perf_counter()
        self.reply = Reply()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        writer = self.writer_class(send, self.turn.message_id)
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
        await run_callback(self.turn.callback, self.turn.request, outcome)

    # -- the turn ------------------------------------------------------------------------------

    async def _run(
        self, writer: TextStreamWriter, scope: Scope, receive: Receive, send: Send
    ) -> Outcome:
        try:
            outcome = await self._lease_queue_generate(writer)
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
            logger.exception("chat turn %s failed", self.turn.message_id)
            if not writer.started:
                response = error_response(500, "internal_error", "the reply could not be generated")
                await _quietly(response(scope, receive, send))
                return Outcome.UNKNOWN_ERROR_OCCURRED
            outcome = Outcome.UNKNOWN_ERROR_OCCURRED
        if outcome in (Outcome.SUCCESS, Outcome.UNKNOWN_ERROR_OCCURRED, Outcome.REJECTED):
            await _quietly(writer.end())
        return outcome

    async def _lease_queue_generate(self, writer: TextStreamWriter) -> Outcome:
        async with contextlib.AsyncExitStack() as stack:
            lease_lost = await stack.enter_async_context(
                session_lease(self.turn.session, self.lease_ttl)
            )
            reporter = QueueReporter(writer)
            self.metrics.generations_waiting.inc()
            try:
                with self.metrics.queue_wait.time():
                    permit = await stack.enter_async_context(
                        self.admission.acquire(on_position=reporter.update)
                    )
            finally:
                self.metrics.generations_waiting.dec()
                await reporter.stop()
            for lost in (lease_lost, permit.lost):
                watcher = asyncio.create_task(self._interrupt_when(lost, "lease_lost"))
                stack.callback(watcher.cancel)
            await writer.start()
            try:
                with self.metrics.generations_active.track_inprogress():
                    await self._generate(writer)
            finally:
                self._interruptible = False
                if self.reply.parts or self.reply.finish_reason is not None:
                    self.reply.finish_reason = self._final_finish_reason()
                    persisted = await asyncio.shield(self._persist())
                    if not persisted:
                        self.reply.finish_reason = "error"
        if self.reply.finish_reason is None:
            # The client left, or the lease was lost, before a single token: nothing stored.
            return self._interrupted_outcome()
        if self.reply.finish_reason == "error":
            await writer.error(_GenerationFailed("the reply could not be completed"))
            return Outcome.UNKNOWN_ERROR_OCCURRED
        await writer.done(self._summary())
        return Outcome.SUCCESS

    async def _generate(self, writer: TextStreamWriter) -> None:
        reply, metrics = self.reply, self.metrics
        reply.generation_started = True
        last_sent = self._arrived
        events = self.engine.generate(self.turn.generation)
        try:
            async with contextlib.aclosing(events):
                async for event in events:
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
                        metrics.tokens_generated.inc(event.completion_tokens)
        except (asyncio.CancelledError, ClientGone):
            raise
        except Exception:
            logger.exception("generation of %s failed", self.turn.message_id)
            reply.finish_reason = "error"

    def _final_finish_reason(self) -> FinishReason:
        if self.reply.finish_reason is not None:
            return self.reply.finish_reason
        return "error" if self._interruption == "lease_lost" else "cancelled"

    async def _persist(self) -> bool:
        """Store the turn with its reply so far; False when the store could not be reached."""
        reply, turn = self.reply, self.turn
        renderer = self.engine.renderer
        if not reply.prompt_tokens:
            reply.prompt_tokens = renderer.count_tokens(turn.generation.prompt)
        if not reply.completion_tokens and reply.parts:
            reply.completion_tokens = renderer.count_tokens(reply.text)
        assert reply.finish_reason is not None
        turn.history.set_reply(
            reply.text,
            message_id=turn.message_id,
            finish_reason=reply.finish_reason,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
        )
        turn.session.get_session()[SESSION_KEY] = turn.history
        try:
            await turn.session.save_session()
        except StoreUnavailable:
            logger.error("could not store the reply %s: session store unavailable", turn.message_id)
            return False
        return True

    def _summary(self) -> dict[str, Any]:
        return {
            "message_id": self.turn.message_id,
            "finish_reason": self.reply.finish_reason,
            "usage": {
                "prompt_tokens": self.reply.prompt_tokens,
                "completion_tokens": self.reply.completion_tokens,
            },
        }

    # -- interruptions -------------------------------------------------------------------------

    def _interrupt(self, reason: Interruption) -> None:
        if self._interruption is None and self._interruptible and self._work is not None:
            self._interruption = reason
            self._work.cancel()

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


class _GenerationFailed(ChatStreamError):
    status = 500
    code = "generation_failed"


class QueueReporter:
    """Tells the client its queue position while it waits, with keep-alives in between."""

    def __init__(self, writer: TextStreamWriter, interval: float = KEEP_ALIVE_INTERVAL) -> None:
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
