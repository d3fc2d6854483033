"""Following a reply that is not running here: from its record in Redis, or from its stored
conversation once the record expired."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

from ..conversations.prompt import Message
from ..errors import ChatStreamError
from .hub import KEEP_ALIVE_INTERVAL, FollowItem, KeepAlive, Queued, ReplyEvent
from .running import HEARTBEAT
from .store import ReplyStore

BLOCK = 1.0
"""Seconds one read waits for new events: also how often the follower says it is there."""
SILENCE_LIMIT = 10.0
"""Seconds a running reply's record may go without news (its instance records at least every
quarter second) before its followers give up on that instance: it was killed, or lost Redis
as the reply ended. They then read the stored conversation, or end with an error."""
LOST = "the instance generating this reply stopped answering: regenerate it"

StoredReply = Callable[[], Awaitable[Message | None]]
"""The reply as its conversation stored it, if it did."""


async def follow_recorded(
    store: ReplyStore,
    message_id: str,
    owner: str,
    after: int = 0,
    stored: StoredReply | None = None,
) -> AsyncGenerator[FollowItem, None]:
    """``owner``'s reply ``message_id`` from its record: the events after ``after``, then live
    ones as the generating instance records them, until its end; its queue position while it
    waits. Nothing when the record is unknown, expired or another owner's. While it follows,
    the generating instance counts it (a heartbeat in the reply's followers). A record that
    says "running" but has had no news for :data:`SILENCE_LIMIT` ends from ``stored`` (the
    reply as its conversation kept it), else with an ``error`` event."""
    follower = secrets.token_hex(8)
    shown = 0
    seen = max(0, after)
    quiet_since = time.monotonic()
    try:
        while True:
            meta = await store.follow(message_id, follower, owner, HEARTBEAT)
            if meta is None:
                return
            if meta.status == "queued" and meta.position and meta.position != shown:
                shown = meta.position
                yield Queued(meta.position)
            ended = not meta.running
            if not ended and meta.silent_for > SILENCE_LIMIT:
                message = None if stored is None else await stored()
                if message is not None and message.finish_reason is not None:
                    async for item in follow_stored(message, seen):
                        yield item
                else:
                    yield ReplyEvent(
                        seen + 1, "error", {"code": "generation_failed", "message": LOST}
                    )
                return
            events = await store.events(message_id, seen, block=0 if ended else BLOCK)
            for event in events:
                seen = event.id
                yield event
                if event.final:
                    return
            if ended and not events:
                return
            if events:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= KEEP_ALIVE_INTERVAL:
                quiet_since = time.monotonic()
                yield KeepAlive()
    finally:
        with contextlib.suppress(ChatStreamError):
            await store.unfollow(message_id, follower)


async def follow_stored(message: Message, after: int = 0) -> AsyncGenerator[FollowItem, None]:
    """A reply whose record expired, from its stored conversation: its text as one ``delta``
    (event 1) and its ``done`` (event 2). A client that had already read some of it (``after``
    > 0) gets ``done`` alone, with the whole ``content`` in it to set its copy right."""
    summary = {
        "message_id": message.message_id,
        "finish_reason": message.finish_reason,
        "usage": {
            "prompt_tokens": message.prompt_tokens or 0,
            "completion_tokens": message.completion_tokens or 0,
        },
    }
    if after <= 0:
        yield ReplyEvent(1, "delta", {"text": message.content})
        yield ReplyEvent(2, "done", summary)
    else:
        yield ReplyEvent(after + 1, "done", {**summary, "content": message.content})
