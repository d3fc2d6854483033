"""Conversations in Redis (or the embedded store), on one node, a Cluster or behind Sentinel.

Each conversation is one hash under its own hash tag (:class:`~chatstream.keys.ConversationKeys`):
``meta`` (owner, title, counts, times, version), ``system`` (its system prompt), the messages
``m:0``, ``m:1``, … and feedback ``f:<message id>``. Each owner has an index under the owner's
hash tag (:class:`~chatstream.keys.OwnerKeys`): a sorted set of conversation ids by last update
and a hash of their summaries, so a list page is one script call in one slot, whatever the
number of conversations. A turn loads its own conversation and writes only what changed: the
new messages and the meta, then the owner's summary. Every change is a Lua script reading
Redis ``TIME``; a script touches one slot, so a change to a conversation and to its owner's
index are two calls (a failure between them leaves at worst a listed conversation that
answers 404, which ``DELETE`` removes).

An anonymous owner's keys expire ``anonymous_ttl`` seconds after their last use (the session's
idle timeout), a signed-in user's never.

Why one module: every script call of the store and of its lease goes through the same key
layout and error translation; apart, they would share everything but their names.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from ..errors import TooManyConversations
from ..keys import DEFAULT_PREFIX, ConversationKeys, OwnerKeys
from ..redis_client import RedisClient, text, unavailable_on_error
from .owners import is_anonymous
from .prompt import ChatPrompt, Message
from .store import (
    Conversation,
    ConversationInfo,
    ConversationLease,
    ConversationStore,
    Page,
    title_from,
)

logger = logging.getLogger("chatstream")

UNREACHABLE = "the conversation store is unavailable; try again shortly"


def _script(name: str) -> str:
    package = files("chatstream.conversations") / "lua"
    return (package / "common.lua").read_text() + (package / f"{name}.lua").read_text()


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisConversationStore(ConversationStore):
    """See the module docstring. ``anonymous_ttl``: seconds an anonymous owner's conversations
    live after their last use."""

    def __init__(
        self, redis: RedisClient, *, anonymous_ttl: float = 7 * 86400, prefix: str = DEFAULT_PREFIX
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self._anonymous_ttl = _ms(anonymous_ttl)
        self._scripts = {
            name: redis.register_script(_script(name))
            for name in (
                "reserve",
                "create",
                "load",
                "write",
                "annotate",
                "summarize",
                "list",
                "unlist",
                "reown",
                "lease",
            )
        }

    async def create(
        self, owner: str, *, title: str | None, system_prompt: str | None, limit: int
    ) -> ConversationInfo:
        conversation_id = secrets.token_hex(16)
        ttl = self._ttl(owner)
        named = "1" if title else "0"
        title = title or title_from(())
        summary = await self._call(
            "reserve", self._owner(owner), conversation_id, title, limit, ttl
        )
        if summary is None:
            raise TooManyConversations(
                f"there are already {limit} conversations: delete one to start another"
            )
        info = _info(conversation_id, json.loads(text(summary)))
        created = round(info.created_at * 1000)
        extra = [] if system_prompt is None else [system_prompt]
        keys = self._conversation(conversation_id)
        await self._call("create", [keys.record], owner, title, created, ttl, named, *extra)
        return info

    async def page(self, owner: str, *, limit: int, before: str | None) -> Page:
        score, after = ("+inf", "") if before is None else _parse_cursor(before)
        reply = await self._call("list", self._owner(owner), score, after, limit)
        more, *flat = reply
        infos = [
            _info(text(cid), json.loads(text(summary)))
            for cid, summary in zip(flat[::2], flat[1::2], strict=True)
        ]
        next_cursor = None
        if int(more) and infos:
            last = infos[-1]
            next_cursor = f"{round(last.updated_at * 1000)}.{last.id}"
        return Page(infos, next_cursor)

    async def load(self, owner: str, conversation_id: str) -> Conversation | None:
        try:
            keys = self._conversation(conversation_id)
        except ValueError:
            return None
        reply = await self._call("load", [keys.record], self._ttl(owner))
        fields = {text(k): text(v) for k, v in zip(reply[::2], reply[1::2], strict=True)}
        if not fields:
            return None
        try:
            return _conversation(conversation_id, owner, fields)
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning(
                "conversation %s cannot be read whole; treated as absent: %s", conversation_id, exc
            )
            return None

    async def write(
        self,
        owner: str,
        conversation: Conversation,
        *,
        start: int,
        messages: Sequence[Message],
    ) -> Conversation | None:
        old = conversation.prompt.messages
        new = [*old[:start], *messages]
        dropped = [m.message_id for m in old[start:] if m.message_id is not None]
        if conversation.size is None:
            size = sum(len(m.content.encode()) for m in new)
        else:  # O(what changes), not O(the conversation's length)
            size = conversation.size + sum(len(m.content.encode()) for m in messages)
            size -= sum(len(m.content.encode()) for m in old[start:])
        title = "" if conversation.renamed else title_from(new)
        encoded = [json.dumps(m.to_dict(), ensure_ascii=False) for m in messages]
        keys = self._conversation(conversation.info.id)
        ttl = self._ttl(owner)
        meta = await self._call(
            "write",
            [keys.record],
            conversation.version,
            start,
            len(messages),
            len(new),
            size,
            title,
            ttl,
            *encoded,
            *dropped,
        )
        if meta is None:
            return None
        stored = json.loads(text(meta))
        info = _info(conversation.info.id, stored)
        await self._summarize(owner, info, ttl)
        gone = set(dropped)
        feedback = {k: v for k, v in conversation.feedback.items() if k not in gone}
        prompt = ChatPrompt(conversation.prompt.system_prompt, new)
        return Conversation(info, prompt, stored["renamed"], feedback, stored["version"], size)

    async def rename(self, owner: str, conversation_id: str, title: str) -> ConversationInfo | None:
        meta = await self._annotate(owner, conversation_id, "title", title)
        if meta is None:
            return None
        info = _info(conversation_id, meta)
        await self._summarize(owner, info, self._ttl(owner))
        return info

    async def set_feedback(
        self, owner: str, conversation_id: str, message_id: str, feedback: dict[str, Any]
    ) -> bool:
        encoded = json.dumps(feedback, ensure_ascii=False)
        return (
            await self._annotate(owner, conversation_id, "feedback", message_id, encoded)
            is not None
        )

    async def delete(self, owner: str, conversation_id: str) -> bool:
        # Listed by the owner, or loaded as the owner's: a damaged record goes too.
        conversation = await self.load(owner, conversation_id)
        listed = await self._call("unlist", self._owner(owner), conversation_id)
        if conversation is None and not listed:
            return False
        keys = self._conversation(conversation_id)
        with unavailable_on_error("conversation store", UNREACHABLE):
            await self.redis.delete(keys.record, keys.lease)
        return True

    async def transfer(self, from_owner: str, to_owner: str) -> int:
        source = OwnerKeys.build(from_owner, self.prefix)
        with unavailable_on_error("conversation store", UNREACHABLE):
            listed: list[Any] = await self.redis.zrange(source.index, 0, -1)
        ids = [text(cid) for cid in listed]
        ttl = self._ttl(to_owner)
        moved = 0
        for conversation_id in ids:
            keys = self._conversation(conversation_id)
            meta = await self._call("reown", [keys.record], from_owner, to_owner, ttl)
            if meta is not None:
                info = _info(conversation_id, json.loads(text(meta)))
                await self._summarize(to_owner, info, ttl, list_it=True)
                moved += 1
            await self._call("unlist", [source.index, source.summaries], conversation_id)
        return moved

    def lease(self, conversation_id: str) -> ConversationLease:
        return RedisConversationLease(self, self._conversation(conversation_id).lease)

    # -- helpers ---------------------------------------------------------------------------------

    async def _annotate(
        self, owner: str, conversation_id: str, *args: str
    ) -> dict[str, Any] | None:
        try:
            keys = self._conversation(conversation_id)
        except ValueError:
            return None
        meta = await self._call("annotate", [keys.record], owner, *args)
        return None if meta is None else dict(json.loads(text(meta)))

    async def _summarize(
        self, owner: str, info: ConversationInfo, ttl: int, *, list_it: bool = False
    ) -> None:
        summary = json.dumps(
            {
                "title": info.title,
                "created_at": round(info.created_at * 1000),
                "updated_at": round(info.updated_at * 1000),
                "message_count": info.message_count,
            },
            ensure_ascii=False,
        )
        updated = round(info.updated_at * 1000)
        listing = int(list_it)
        await self._call("summarize", self._owner(owner), info.id, summary, updated, ttl, listing)

    async def _call(self, name: str, keys: Sequence[str], *args: str | int) -> Any:
        with unavailable_on_error("conversation store", UNREACHABLE):
            return await self._scripts[name](keys=list(keys), args=list(args))

    def _conversation(self, conversation_id: str) -> ConversationKeys:
        return ConversationKeys.build(conversation_id, self.prefix)

    def _owner(self, owner: str) -> list[str]:
        keys = OwnerKeys.build(owner, self.prefix)
        return [keys.index, keys.summaries]

    def _ttl(self, owner: str) -> int:
        return self._anonymous_ttl if is_anonymous(owner) else 0


class RedisConversationLease(ConversationLease):
    def __init__(self, store: RedisConversationStore, key: str) -> None:
        self._store = store
        self._key = key

    async def acquire(self, message_id: str, ttl: float) -> str | None:
        token = secrets.token_hex(16)
        with unavailable_on_error("conversation store", UNREACHABLE):
            taken = await self._store.redis.set(
                self._key, f"{token} {message_id}", nx=True, px=_ms(ttl)
            )
        return token if taken else None

    async def renew(self, token: str, ttl: float) -> bool:
        return bool(await self._store._call("lease", [self._key], token, "renew", _ms(ttl)))

    async def release(self, token: str) -> None:
        await self._store._call("lease", [self._key], token, "release", 0)

    async def running(self) -> str | None:
        with unavailable_on_error("conversation store", UNREACHABLE):
            held = await self._store.redis.get(self._key)
        return None if held is None else text(held).partition(" ")[2]


def _info(conversation_id: str, data: dict[str, Any]) -> ConversationInfo:
    return ConversationInfo(
        id=conversation_id,
        title=str(data["title"]),
        created_at=int(data["created_at"]) / 1000,
        updated_at=int(data["updated_at"]) / 1000,
        message_count=int(data.get("message_count", data.get("count", 0))),
    )


def _conversation(conversation_id: str, owner: str, fields: dict[str, str]) -> Conversation | None:
    """The record's fields as a conversation; ``None`` when it is another owner's. Raises when
    the record cannot be read whole (a message or the meta missing or unreadable)."""
    meta = json.loads(fields["meta"])
    if meta["owner"] != owner:
        return None
    messages = [Message.from_dict(json.loads(fields[f"m:{i}"])) for i in range(int(meta["count"]))]
    feedback = {
        name.removeprefix("f:"): json.loads(value)
        for name, value in fields.items()
        if name.startswith("f:")
    }
    prompt = ChatPrompt(fields.get("system"), messages)
    info = _info(conversation_id, meta)
    size = meta.get("bytes")
    return Conversation(
        info,
        prompt,
        bool(meta["renamed"]),
        feedback,
        int(meta["version"]),
        size if isinstance(size, int) else None,
    )


def _parse_cursor(cursor: str) -> tuple[str, str]:
    score, _, conversation_id = cursor.partition(".")
    if not score.isdigit() or not conversation_id.isalnum():
        raise ValueError(f"not a cursor of this store: {cursor!r}")
    return score, conversation_id
