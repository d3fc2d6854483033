"""One request's way to its owner's conversations: who owns them, which one is active.

The session holds two small values: the id of its active conversation (what ``/chat_stream``,
``/get_prompt``, ``/clear_context`` and the seed callback's ``session.get("chat_prompt")`` see),
and, for a visitor who is not signed in, the random id of its anonymous owner. Conversations
themselves live in the :class:`~chatstream.conversations.store.ConversationStore`.

Three things happen here on the way, once each:

- **Migration**: a session stored by the release before conversations keeps its one
  ``chat_prompt`` (and its feedback) in the session itself; it becomes the owner's active
  conversation.
- **Sign-in**: when a visitor who owns anonymous conversations is signed in, they move to the
  user (nothing is lost) and the session id is rotated (a signed-in session never keeps the id
  it had before, against fixation).
- **The seed callback's view**: the active conversation is *provided* to the session under
  ``chat_prompt`` for the request (never stored there), bound to the renderer, so
  ``session.get("chat_prompt").create_prompt()`` works as it always did.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request

from sessions import Session

from ..config import ConversationLimits
from ..errors import NotFound
from ..keys import ACTIVE_CONVERSATION, ANONYMOUS_OWNER, CHAT_PROMPT, FEEDBACK
from .owners import OwnerRule, new_anonymous_owner, user_owner
from .prompt import ChatPrompt, Message
from .store import Conversation, ConversationInfo, ConversationStore

logger = logging.getLogger("chatstream")

Binder = Callable[[ChatPrompt], ChatPrompt]
"""Attaches the renderer and limits to a conversation's prompt (``ChatStream.bind``)."""


@dataclass(frozen=True, slots=True)
class ConversationPolicy:
    """What every request's access shares: the store, the owner rule, the limits, the system
    prompt of new conversations and how prompts are bound."""

    store: ConversationStore
    owner_rule: OwnerRule
    limits: ConversationLimits
    system_prompt: str | None
    bind: Binder


class ConversationAccess:
    """The conversations of one request's owner."""

    def __init__(self, policy: ConversationPolicy, request: Request, session: Session) -> None:
        self.policy = policy
        self.store = policy.store
        self.request = request
        self.session = session
        self._owner: str | None = None
        self._settled = False

    async def owner(self, *, create: bool) -> str | None:
        """The owner: the signed-in user, else the visitor's anonymous owner (made when
        ``create``, ``None`` otherwise while the visitor has none)."""
        if self._owner is None:
            await self._settle()
            data = self.session.get_session()
            user = self.policy.owner_rule(self.request)
            if user is not None:
                self._owner = user_owner(user)
            elif isinstance(anonymous := data.get(ANONYMOUS_OWNER), str):
                self._owner = anonymous
            elif create:
                self._owner = data[ANONYMOUS_OWNER] = new_anonymous_owner()
                await self.session.save_session()
        return self._owner

    async def active(self, *, create: bool) -> Conversation | None:
        """The active conversation; a new one when there is none and ``create``."""
        owner = await self.owner(create=create)
        active = self.session.get_session().get(ACTIVE_CONVERSATION)
        conversation = None
        if owner is not None and isinstance(active, str):
            conversation = await self.store.load(owner, active)
        if conversation is None and create:
            info = await self.create(None)
            conversation = await self.store.load(await self._require_owner(), info.id)
        if conversation is not None:
            self.show(conversation.prompt)
        return conversation

    async def use(self, conversation_id: str) -> Conversation:
        """The owner's conversation ``conversation_id``, now the active one (404 if none)."""
        owner = await self.owner(create=False)
        conversation = None if owner is None else await self.store.load(owner, conversation_id)
        if conversation is None:
            raise NotFound("there is no such conversation")
        await self._activate(conversation_id)
        self.show(conversation.prompt)
        return conversation

    async def load(self, conversation_id: str) -> Conversation:
        """The owner's conversation ``conversation_id`` (404 if none), the active one unchanged."""
        owner = await self.owner(create=False)
        conversation = None if owner is None else await self.store.load(owner, conversation_id)
        if conversation is None:
            raise NotFound("there is no such conversation")
        return conversation

    async def create(self, title: str | None) -> ConversationInfo:
        """A new empty conversation of the owner, now the active one."""
        owner = await self._require_owner()
        info = await self.store.create(
            owner,
            title=title,
            system_prompt=self.policy.system_prompt,
            limit=self.policy.limits.max_conversations,
        )
        await self._activate(info.id)
        return info

    @property
    def active_id(self) -> str | None:
        active = self.session.get_session().get(ACTIVE_CONVERSATION)
        return active if isinstance(active, str) else None

    async def forget(self, conversation_id: str) -> None:
        """The conversation is gone: it is no longer the active one."""
        if self.active_id == conversation_id:
            self.session.get_session().pop(ACTIVE_CONVERSATION, None)
            await self.session.save_session()

    def show(self, prompt: ChatPrompt) -> ChatPrompt:
        """Provide ``prompt`` (bound) as the session's ``chat_prompt`` for this request."""
        bound = self.policy.bind(prompt)
        self.session.provide(CHAT_PROMPT, bound)
        return bound

    # -- once per request ------------------------------------------------------------------------

    async def _settle(self) -> None:
        if self._settled:
            return
        self._settled = True
        data = self.session.get_session()
        user = self.policy.owner_rule(self.request)
        anonymous = data.get(ANONYMOUS_OWNER)
        if user is not None and isinstance(anonymous, str):
            moved = await self.store.transfer(anonymous, user_owner(user))
            logger.info("a visitor signed in: %d conversations moved to the user", moved)
            data.pop(ANONYMOUS_OWNER, None)
            await self.session.rotate()
        if isinstance(legacy := data.get(CHAT_PROMPT), ChatPrompt):
            await self._migrate(legacy, data.get(FEEDBACK))

    async def _migrate(self, legacy: ChatPrompt, feedback: object) -> None:
        """The release before conversations kept one conversation in the session: it becomes
        a stored conversation, the active one."""
        data = self.session.get_session()
        owner = self.policy.owner_rule(self.request)
        if owner is not None:
            self._owner = user_owner(owner)
        else:
            self._owner = data.get(ANONYMOUS_OWNER) or new_anonymous_owner()
            data[ANONYMOUS_OWNER] = self._owner
        info = await self.store.create(
            self._owner,
            title=None,
            system_prompt=legacy.system_prompt,
            limit=self.policy.limits.max_conversations,
        )
        conversation = await self.store.load(self._owner, info.id)
        if conversation is not None:
            messages = [_with_id(message) for message in legacy.messages]
            await self.store.write(self._owner, conversation, start=0, messages=messages)
            if isinstance(feedback, dict):
                for message_id, entry in feedback.items():
                    if isinstance(entry, dict):
                        await self.store.set_feedback(self._owner, info.id, message_id, entry)
        data.pop(CHAT_PROMPT, None)
        data.pop(FEEDBACK, None)
        data[ACTIVE_CONVERSATION] = info.id
        await self.session.save_session()

    async def _activate(self, conversation_id: str) -> None:
        if self.active_id != conversation_id:
            self.session.get_session()[ACTIVE_CONVERSATION] = conversation_id
            await self.session.save_session()

    async def _require_owner(self) -> str:
        owner = await self.owner(create=True)
        assert owner is not None
        return owner


def _with_id(message: Message) -> Message:
    """User messages carry ids since conversations did; older ones get one."""
    if message.message_id is None:
        message.message_id = uuid.uuid4().hex
    return message


def new_message_id() -> str:
    return uuid.uuid4().hex
