"""Every name chatstream stores under, built in one place: the fields it keeps in a session,
and its own Redis keys.

Session fields are keys of the session mapping (``request.state.session.get_session()``); the
session store decides where they live. chatstream's own Redis keys all start with
:data:`DEFAULT_PREFIX` and carry a hash tag, so that what one Lua script changes lives in one
Redis Cluster slot.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# -- session fields --------------------------------------------------------------------------------

CHAT_PROMPT = "chat_prompt"
"""The active conversation's :class:`~chatstream.conversations.prompt.ChatPrompt`, provided for
the request (the seed callback reads it); sessions of the release before conversations stored
their one conversation here."""
ACTIVE_CONVERSATION = "active_conversation"
"""The id of the session's active conversation."""
ANONYMOUS_OWNER = "anonymous_owner"
"""The owner id of a visitor's conversations while the visitor is not signed in."""
GENERATION_PARAMS = "generation_params"
"""The sampling parameters the session set (``/set_generation_params``)."""
FEEDBACK = "feedback"
"""Likes and dislikes, by message id, as sessions of the release before conversations kept them
(they now live with their conversation)."""
GENERATION_LEASE = "generation"
"""The session lock held while the session generates (one reply at a time)."""

# -- Redis keys ------------------------------------------------------------------------------------

DEFAULT_PREFIX = "chatstream:"

READY_PROBE = DEFAULT_PREFIX + "{ready}:probe"
"""Written (with a short TTL) by ``/readyz``: a node that cannot take writes is not ready."""

# The admission semaphore: all of its keys share the hash tag ``{sem:<name>}``.
SEMAPHORE_TAG = "{{sem:{name}}}"
TICKETS = "tickets"
QUEUE = "queue"
READY = "ready"
HEARTBEATS = "heartbeats"
HOLDERS = "holders"
TICKET_CLIENTS = "ticket-clients"
CLIENT_TICKETS = "client-tickets"
WAKE_CHANNEL = "wake"

# One client's turns per minute: one key, and one hash tag, per client.
RATE_LIMIT = "{{rate:{client}}}:turns"


def client_digest(client: str) -> str:
    """What chatstream stores of a client id (an address, a user id, an API key's digest): a
    fixed-size digest, so any string is safe in a key or a field and none is stored in clear."""
    return hashlib.sha256(client.encode()).hexdigest()[:32]


def rate_limit_key(client: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Sorted set: when ``client`` started its turns of the last minute (ms of Redis ``TIME``)."""
    return prefix + RATE_LIMIT.format(client=client_digest(client))


@dataclass(frozen=True, slots=True)
class SemaphoreKeys:
    tickets: str
    """Counter: each waiter's ticket number, the global FIFO order."""
    queue: str
    """Sorted set: every waiter's ticket id, scored by ticket number."""
    ready: str
    """Sorted set: the waiters whose instance has a free engine slot, scored by ticket number."""
    heartbeats: str
    """Sorted set: every waiter's ticket id, scored by when it expires unless refreshed (ms)."""
    holders: str
    """Sorted set: every granted ticket id, scored by when its lease expires (ms)."""
    ticket_clients: str
    """Hash: the client digest of every queued or granted ticket that has a client."""
    client_tickets: str
    """Hash: how many tickets each client digest has queued or granted (no field at zero)."""
    wake_channel: str
    """Pub/sub channel (not a key) on which scripts tell waiting instances to look again."""

    @classmethod
    def build(cls, name: str, prefix: str = DEFAULT_PREFIX) -> SemaphoreKeys:
        if "{" in name or "}" in name:
            raise ValueError(f"a semaphore name may not contain braces: {name!r}")
        base = f"{prefix}{SEMAPHORE_TAG.format(name=name)}:"
        return cls(
            tickets=base + TICKETS,
            queue=base + QUEUE,
            ready=base + READY,
            heartbeats=base + HEARTBEATS,
            holders=base + HOLDERS,
            ticket_clients=base + TICKET_CLIENTS,
            client_tickets=base + CLIENT_TICKETS,
            wake_channel=base + WAKE_CHANNEL,
        )

    @property
    def script_keys(self) -> list[str]:
        """``KEYS`` of every script, in the order ``common.lua`` names them."""
        return [
            self.tickets,
            self.queue,
            self.ready,
            self.heartbeats,
            self.holders,
            self.ticket_clients,
            self.client_tickets,
        ]


# Conversations: each conversation's keys share its hash tag ``{conv:<id>}``; each owner's index
# shares ``{owner:<digest of the owner>}`` (owner names never appear in keys).
@dataclass(frozen=True, slots=True)
class ConversationKeys:
    record: str
    """Hash: ``meta`` (JSON), the messages ``m:<position>`` and feedback ``f:<message id>``."""
    lease: str
    """String: ``<token> <message id>`` while a reply of the conversation generates."""

    @classmethod
    def build(cls, conversation_id: str, prefix: str = DEFAULT_PREFIX) -> ConversationKeys:
        base = f"{prefix}conv:{{{_checked(conversation_id)}}}"
        return cls(record=base, lease=base + ":lease")


@dataclass(frozen=True, slots=True)
class OwnerKeys:
    index: str
    """Sorted set: the owner's conversation ids, scored by their last update (ms)."""
    summaries: str
    """Hash: conversation id to its summary (JSON: title, created_at, updated_at, count)."""

    @classmethod
    def build(cls, owner: str, prefix: str = DEFAULT_PREFIX) -> OwnerKeys:
        digest = hashlib.sha256(owner.encode()).hexdigest()[:32]
        base = f"{prefix}owner:{{{digest}}}"
        return cls(index=base + ":conversations", summaries=base + ":summaries")


def valid_id(identifier: str) -> bool:
    """Whether ``identifier`` may be an id of ours (and go inside a hash tag)."""
    return 0 < len(identifier) <= 64 and all(c.isalnum() or c in "-_" for c in identifier)


def _checked(identifier: str) -> str:
    """An id that may go inside a hash tag (our ids are hex; a client's are checked first)."""
    if not valid_id(identifier):
        raise ValueError(f"not an id: {identifier!r}")
    return identifier


# Replies: each reply's keys share its hash tag ``{reply:<message id>}``.
@dataclass(frozen=True, slots=True)
class ReplyKeys:
    meta: str
    """Hash: owner, conversation, status, queue position, the pending user message, ``stop``."""
    events: str
    """Stream: the reply's events, with the ids its server-sent events carry (``0-<n>``)."""
    followers: str
    """Sorted set: clients following the reply from other instances, by heartbeat expiry (ms)."""

    @classmethod
    def build(cls, message_id: str, prefix: str = DEFAULT_PREFIX) -> ReplyKeys:
        base = f"{prefix}reply:{{{_checked(message_id)}}}"
        return cls(meta=base, events=base + ":events", followers=base + ":followers")


def request_key(conversation_id: str, idempotency_key: str, prefix: str = DEFAULT_PREFIX) -> str:
    """String: the message id of the reply a POST with this ``Idempotency-Key`` started in this
    conversation (under the conversation's hash tag), kept as long as the reply's events."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"{ConversationKeys.build(conversation_id, prefix).record}:request:{digest}"
