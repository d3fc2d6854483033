"""One chat turn: plan it, hold its conversation's lease, queue, generate, store, callback.

A turn changes its conversation from one position on: a new message is appended with its
reply; a regenerate replaces the last reply; an edit replaces a user message and drops what came
after it; a continue extends the last reply, cut at the length limit or stopped. :func:`plan_turn`
says which messages go and what the model answers; :class:`TurnRun`, a
:class:`~chatstream.chat.run.GenerationRun`, holds the conversation's lease (one reply at a
time per conversation, cluster-wide) while it queues and generates, stores the messages and the
reply (however the stream ended, once it produced something) before the permit and the lease
are released, and runs the completion callback last. A turn refused or abandoned before its
first token leaves the conversation exactly as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from starlette.requests import Request

from ..admission.lease import conversation_lease
from ..config import ConversationLimits
from ..conversations.access import ConversationAccess, new_message_id
from ..conversations.prompt import ChatPrompt, Message
from ..conversations.store import Conversation
from ..engines.base import GenerationRequest
from ..errors import (
    ChatStreamError,
    ConversationChanged,
    ConversationFull,
    NotFound,
    NothingToContinue,
    NothingToRegenerate,
    SessionBusy,
)
from ..replies.store import ReplyStore
from .outcome import CompletionCallback, Outcome, run_callback
from .run import GenerationRun
from .services import Services

logger = logging.getLogger("chatstream")

Action = Literal["say", "regenerate", "edit", "continue"]
CONTINUABLE = ("length", "cancelled")
"""How a reply ended that ``continue`` can extend."""


@dataclass(slots=True)
class TurnPlan:
    """The messages from ``start`` on are replaced by ``pending`` (a new or edited user
    message, or nothing) and the reply; ``history`` is what the reply answers, and
    ``continues`` the reply it extends, if any."""

    start: int
    pending: list[Message]
    history: ChatPrompt
    continues: Message | None = None


def plan_turn(
    conversation: Conversation,
    action: Action,
    limits: ConversationLimits,
    *,
    text: str | None = None,
    message_id: str | None = None,
) -> TurnPlan:
    """What the turn ``action`` does to ``conversation`` (409 when there is nothing to do it
    on, or no room for it: nothing is ever dropped to make room; 404 for an edit of a message
    that is not one of its user messages)."""
    prompt = conversation.prompt
    messages = prompt.messages
    if action == "say":
        assert text is not None
        start, pending = len(messages), [Message("user", text, new_message_id())]
    elif action == "edit":
        assert text is not None
        start = next(
            (i for i, m in enumerate(messages) if m.role == "user" and m.message_id == message_id),
            -1,
        )
        if start < 0:
            raise NotFound("this conversation has no user message with that id")
        pending = [Message("user", text, message_id)]
    elif action == "regenerate":
        if not any(m.role == "user" for m in messages):
            raise NothingToRegenerate("there is no user turn to regenerate a reply for")
        start = len(messages) - (1 if messages[-1].role == "assistant" else 0)
        pending = []
    else:
        last = messages[-1] if messages else None
        if last is None or last.role != "assistant" or last.finish_reason not in CONTINUABLE:
            raise NothingToContinue(
                "there is no reply cut at the length limit or stopped to continue"
            )
        start, pending = len(messages) - 1, []
        return TurnPlan(start, pending, ChatPrompt(prompt.system_prompt, messages[:start]), last)
    kept = [*messages[:start], *pending]
    if pending:
        _check_room(kept, _size(conversation, start, pending), limits)
    return TurnPlan(start, pending, ChatPrompt(prompt.system_prompt, kept))


def _size(conversation: Conversation, start: int, pending: Sequence[Message]) -> int:
    """Bytes of the messages before ``start`` and ``pending``: from the stored size when the
    store knows it (O(what changes)), else counted."""
    messages = conversation.prompt.messages
    if conversation.size is None:
        return _bytes([*messages[:start], *pending])
    return conversation.size - _bytes(messages[start:]) + _bytes(pending)


def _bytes(messages: Sequence[Message]) -> int:
    return sum(len(m.content.encode()) for m in messages)


def _check_room(messages: Sequence[Message], size: int, limits: ConversationLimits) -> None:
    if len(messages) + 1 > limits.max_messages:
        raise ConversationFull(
            f"this conversation has reached {limits.max_messages} messages: start a new one"
        )
    if size > limits.max_conversation_bytes:
        raise ConversationFull(
            f"this conversation has reached {limits.max_conversation_bytes} bytes: start a new one"
        )


@dataclass(slots=True)
class ChatTurn:
    """What the handler prepared before the run starts."""

    request: Request
    access: ConversationAccess
    owner: str
    conversation: Conversation
    plan: TurnPlan
    message_id: str
    callback: CompletionCallback | None
    lease_ttl: float
    replies: ReplyStore | None = None
    """Where the request's ``Idempotency-Key`` is remembered (with recording)."""
    idempotency_key: str | None = None
    reply_ttl: float = 0.0
    stored: Conversation | None = field(default=None)


class TurnRun(GenerationRun):
    """Generates the reply of ``turn`` and stores it in its conversation."""

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
        turn = self.turn
        lease = turn.access.store.lease(turn.conversation.info.id)
        lost = await stack.enter_async_context(
            conversation_lease(lease, turn.message_id, turn.lease_ttl)
        )
        # The turn was planned on the conversation as loaded: another turn may have changed it
        # before this one got the lease (a reply stored meanwhile).
        current = await turn.access.store.load(turn.owner, turn.conversation.info.id)
        if current is None or current.version != turn.conversation.version:
            raise ConversationChanged("the conversation changed meanwhile: send the turn again")
        if turn.replies is not None and turn.idempotency_key is not None:
            earlier = await turn.replies.remember_request(
                turn.conversation.info.id, turn.idempotency_key, turn.message_id, turn.reply_ttl
            )
            if earlier is not None:  # the same request, retried as the first one ended
                raise SessionBusy("this request already started a reply", message_id=earlier)
        return (lost,)

    async def settle(self) -> bool:
        """Store the turn with its reply so far; False when it could not be stored."""
        reply, turn = self.reply, self.turn
        assert reply.finish_reason is not None
        before = turn.plan.continues
        message = Message(
            "assistant",
            (before.content if before else "") + reply.text,
            turn.message_id,
            reply.finish_reason,
            reply.prompt_tokens,
            ((before.completion_tokens or 0) if before else 0) + reply.completion_tokens,
        )
        try:
            stored = await turn.access.store.write(
                turn.owner,
                turn.conversation,
                start=turn.plan.start,
                messages=[*turn.plan.pending, message],
            )
        except ChatStreamError:
            logger.error("could not store the reply %s: the store is unavailable", turn.message_id)
            return False
        if stored is None:
            logger.error("could not store the reply %s: its conversation changed", turn.message_id)
            return False
        turn.stored = stored
        turn.access.show(stored.prompt)
        return True

    async def finished(self, outcome: Outcome) -> None:
        await run_callback(self.turn.callback, self.turn.request, outcome)
