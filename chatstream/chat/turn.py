"""One chat turn: lease, queue, generate, persist, release, callback.

A :class:`TurnRun` is a :class:`~chatstream.chat.run.GenerationRun` that also holds the
session's generation lease while it queues and generates, stores the turn (the reply so far,
however the stream ended) before the permit and the lease are released, and runs the
completion callback last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.requests import Request

from sessions import Session, StoreUnavailable

from ..admission.base import Admission
from ..admission.lease import session_lease
from ..conversations.prompt import ChatPrompt
from ..engines.base import Engine, GenerationRequest
from ..keys import CHAT_PROMPT
from ..metrics import Metrics
from .outcome import CompletionCallback, Outcome, run_callback
from .run import GenerationRun

logger = logging.getLogger("chatstream")


@dataclass(slots=True)
class ChatTurn:
    """What the handler prepared before the run starts."""

    request: Request
    session: Session
    history: ChatPrompt  # the conversation with this turn's user message, not yet stored
    message_id: str
    callback: CompletionCallback | None
    lease_ttl: float


class TurnRun(GenerationRun):
    """Generates the reply of ``turn`` and stores it in the session."""

    def __init__(
        self,
        turn: ChatTurn,
        generation: GenerationRequest,
        *,
        engine: Engine,
        admission: Admission,
        metrics: Metrics,
        route: str = "",
    ) -> None:
        super().__init__(
            generation, engine=engine, admission=admission, metrics=metrics, route=route
        )
        self.turn = turn

    async def hold(self, stack: contextlib.AsyncExitStack) -> Sequence[asyncio.Event]:
        lease_lost = await stack.enter_async_context(
            session_lease(self.turn.session, self.turn.lease_ttl)
        )
        return (lease_lost,)

    async def settle(self) -> bool:
        """Store the turn with its reply so far; False when the store could not be reached."""
        reply, turn = self.reply, self.turn
        assert reply.finish_reason is not None
        turn.history.set_reply(
            reply.text,
            message_id=turn.message_id,
            finish_reason=reply.finish_reason,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
        )
        turn.session.get_session()[CHAT_PROMPT] = turn.history
        try:
            await turn.session.save_session()
        except StoreUnavailable:
            logger.error("could not store the reply %s: session store unavailable", turn.message_id)
            return False
        return True

    async def finished(self, outcome: Outcome) -> None:
        await run_callback(self.turn.callback, self.turn.request, outcome)
