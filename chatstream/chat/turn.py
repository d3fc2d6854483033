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

from ..admission.lease import session_lease
from ..config import ConversationLimits
from ..conversations.prompt import ChatPrompt
from ..engines.base import GenerationRequest
from ..errors import ConversationFull
from ..keys import CHAT_PROMPT, FEEDBACK
from .outcome import CompletionCallback, Outcome, run_callback
from .run import GenerationRun, Services

logger = logging.getLogger("chatstream")


def prepare_turn(history: ChatPrompt, user_input: str | None, limits: ConversationLimits) -> None:
    """Make ``history`` the conversation to reply to: ``user_input`` appended, or, when it is
    ``None``, the last reply dropped (a regenerate; 409 ``nothing_to_regenerate`` without a
    user turn). A conversation with no room left for the turn and its reply is 409
    ``conversation_full``: nothing is ever dropped to make room."""
    if user_input is None:
        history.drop_last_reply()
        return
    messages, size = history.size()
    if messages + 2 > limits.max_messages:
        raise ConversationFull(
            f"this conversation has reached {limits.max_messages} messages: start a new one"
        )
    if size + len(user_input.encode()) > limits.max_conversation_bytes:
        raise ConversationFull(
            f"this conversation has reached {limits.max_conversation_bytes} bytes: start a new one"
        )
    history.add_user_message(user_input)


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
        services: Services,
        *,
        client: str | None = None,
        route: str = "",
    ) -> None:
        super().__init__(generation, services, client=client, route=route)
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
        data = turn.session.get_session()
        data[CHAT_PROMPT] = turn.history
        feedback = data.get(FEEDBACK)
        if feedback:  # a regenerated reply's feedback goes with it
            kept = {message.message_id for message in turn.history.messages}
            data[FEEDBACK] = {mid: entry for mid, entry in feedback.items() if mid in kept}
        try:
            await turn.session.save_session()
        except StoreUnavailable:
            logger.error("could not store the reply %s: session store unavailable", turn.message_id)
            return False
        return True

    async def finished(self, outcome: Outcome) -> None:
        await run_callback(self.turn.callback, self.turn.request, outcome)
