"""The conversation store contract: conversations as records of an owner.

An owner is a string (``user:<id>`` for a signed-in user, ``anon:<random id>`` for a visitor
without one: see :mod:`chatstream.conversations.owners`). A store keeps each conversation
(its messages, feedback and title) and, per owner, an index of them by last update. Every
method takes the owner: a conversation of another owner is answered exactly like an unknown
one (``None`` / ``False``), so ids reveal nothing. Writes replace the messages from one
position on (an append, a regenerate, an edit or a continue are all that), so a turn's write
is proportional to what it changes, never to the conversation's length.

:class:`~chatstream.conversations.redis_store.RedisConversationStore` is the implementation;
another store implements these methods (and :class:`ConversationLease`'s) with the same
meaning. Every method raises :class:`~chatstream.errors.ServiceUnavailable` when the backend
cannot be reached.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .prompt import ChatPrompt, Message

UNTITLED = "New chat"
TITLE_LENGTH = 60
"""Characters of the first user message an untitled conversation is named after."""


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    """What a conversation list shows of one conversation."""

    id: str
    title: str
    created_at: float  # seconds since the epoch (the store's clock)
    updated_at: float
    message_count: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "message_count": self.message_count,
        }


@dataclass(slots=True)
class Conversation:
    """A loaded conversation: its summary, its messages (``prompt``), its feedback by message
    id, and ``version``, which every write checks and moves on."""

    info: ConversationInfo
    prompt: ChatPrompt
    renamed: bool = False
    feedback: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: int = 0
    size: int | None = None
    """UTF-8 bytes of its messages' contents as the store last wrote them (``None``:
    unknown), so that a write need not count the whole conversation again."""


@dataclass(frozen=True, slots=True)
class Page:
    conversations: list[ConversationInfo]
    next: str | None
    """The cursor of the next page (``before=``), ``None`` on the last one."""


class ConversationStore(ABC):
    """Conversations of owners; see the module docstring."""

    @abstractmethod
    async def create(
        self, owner: str, *, title: str | None, system_prompt: str | None, limit: int
    ) -> ConversationInfo:
        """A new, empty conversation; :class:`~chatstream.errors.TooManyConversations` when
        the owner already has ``limit``. A ``title`` given here sticks, as a rename does;
        without one, the conversation is named after its first user message."""

    @abstractmethod
    async def page(self, owner: str, *, limit: int, before: str | None) -> Page:
        """The owner's conversations, most recently updated first, ``limit`` at most, after the
        cursor ``before`` (``ValueError`` for a cursor this store did not make)."""

    @abstractmethod
    async def load(self, owner: str, conversation_id: str) -> Conversation | None:
        """The conversation, or ``None`` when it is unknown, another owner's, or damaged (a
        record that cannot be read whole is logged and treated as absent)."""

    @abstractmethod
    async def write(
        self,
        owner: str,
        conversation: Conversation,
        *,
        start: int,
        messages: Sequence[Message],
    ) -> Conversation | None:
        """Replace the messages from position ``start`` on with ``messages`` (the feedback of
        every message dropped goes with it), if the record is still at ``conversation``'s
        version. Returns the conversation as stored, or ``None`` when it changed meanwhile or
        is gone."""

    @abstractmethod
    async def rename(self, owner: str, conversation_id: str, title: str) -> ConversationInfo | None:
        """Give the conversation a title of its own (no longer its first message)."""

    @abstractmethod
    async def set_feedback(
        self, owner: str, conversation_id: str, message_id: str, feedback: dict[str, Any]
    ) -> bool:
        """Keep ``feedback`` on a message (the latest replaces the earlier)."""

    @abstractmethod
    async def delete(self, owner: str, conversation_id: str) -> bool:
        """Remove the conversation with its messages and feedback; False when unknown."""

    @abstractmethod
    async def transfer(self, from_owner: str, to_owner: str) -> int:
        """Give every conversation of ``from_owner`` to ``to_owner`` (a visitor who signed in);
        returns how many moved."""

    @abstractmethod
    def lease(self, conversation_id: str) -> ConversationLease:
        """The lock held while one of the conversation's replies generates."""


class ConversationLease(ABC):
    """One reply at a time per conversation, across instances: a lease with a TTL that its
    holder renews, so a crashed holder frees it within the TTL."""

    @abstractmethod
    async def acquire(self, message_id: str, ttl: float) -> str | None:
        """Take the lease for the reply ``message_id``: its token, or ``None`` when held."""

    @abstractmethod
    async def renew(self, token: str, ttl: float) -> bool:
        """Extend it; False when ``token`` no longer holds it."""

    @abstractmethod
    async def release(self, token: str) -> None:
        """Give it back (nothing happens when ``token`` no longer holds it)."""

    @abstractmethod
    async def running(self) -> str | None:
        """The message id of the reply generating now, if any."""


def title_from(messages: Sequence[Message]) -> str:
    """An untitled conversation's title: its first user message, shortened to a line."""
    first = next((m.content for m in messages if m.role == "user"), None)
    if first is None:
        return UNTITLED
    line = " ".join(first.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1].rstrip() + "…"
