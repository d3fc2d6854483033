"""Replies in Redis: each reply's events, status and followers, so that any instance can serve
a reply, stop it, or see who follows it.

A reply's keys share its hash tag (:class:`~chatstream.keys.ReplyKeys`): a hash of its meta
(owner, conversation, where in the conversation it goes and the user message it answers, its
status and queue position, and ``stop`` once someone asked it to stop), a stream of its events
whose ids are ``0-<n>`` for the n-th event (so ``Last-Event-ID: n`` reads on after ``0-n``), and
a sorted set of the clients that follow it from other instances, by heartbeat expiry. The
generating instance writes the new events in one script call at most every
:data:`~chatstream.replies.running.FLUSH_INTERVAL`; every key expires ``reply_ttl`` seconds
after its last write, so an ended reply (or one whose instance crashed) cleans itself up.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from ..conversations.prompt import Message
from ..keys import DEFAULT_PREFIX, ReplyKeys, request_key, valid_id
from ..redis_client import RedisClient, text, unavailable_on_error
from .hub import ReplyEvent

logger = logging.getLogger("chatstream")

UNAVAILABLE = "the reply store is unavailable; try again shortly"


def _script(name: str) -> str:
    package = files("chatstream.replies") / "lua"
    return (package / "common.lua").read_text() + (package / f"{name}.lua").read_text()


@dataclass(frozen=True, slots=True)
class ReplyMeta:
    """What any instance knows of a reply."""

    owner: str
    conversation_id: str
    start: int
    pending: list[Message]
    status: str
    position: int
    silent_for: float = 0.0
    """Seconds since the generating instance last recorded (as a follower last saw it)."""

    @property
    def running(self) -> bool:
        return self.status in ("queued", "generating")


@dataclass(frozen=True, slots=True)
class Control:
    """What the generating instance learns when it records: whether someone asked the reply to
    stop, and how many clients follow it from other instances."""

    stop: bool
    followers: int


class ReplyStore:
    """See the module docstring."""

    def __init__(self, redis: RedisClient, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.redis = redis
        self.prefix = prefix
        self._scripts = {
            name: redis.register_script(_script(name))
            for name in ("begin", "record", "follow", "stop")
        }

    async def begin(
        self,
        message_id: str,
        *,
        owner: str,
        conversation_id: str,
        start: int,
        pending: Sequence[Message],
        ttl: float,
    ) -> None:
        """A new reply (queued) of ``owner``'s conversation, replacing its messages from
        ``start`` on with ``pending`` and itself."""
        meta: dict[str, str | int] = {
            "owner": owner,
            "conversation": conversation_id,
            "start": start,
            "pending": json.dumps([m.to_dict() for m in pending], ensure_ascii=False),
            "status": "queued",
            "position": 0,
        }
        pairs = [item for field, value in meta.items() for item in (field, value)]
        await self._call("begin", message_id, round(ttl * 1000), *pairs)

    async def record(
        self,
        message_id: str,
        events: Sequence[ReplyEvent],
        *,
        status: str,
        position: int,
        ttl: float,
    ) -> Control:
        """Append ``events`` (those already recorded are skipped) and the status."""
        flat: list[str | int] = []
        for event in events:
            flat += [event.id, event.name, json.dumps(event.data, ensure_ascii=False)]
        args = [round(ttl * 1000), status, position, len(events), *flat]
        stop, followers = await self._call("record", message_id, *args)
        return Control(bool(int(stop)), int(followers))

    async def follow(
        self, message_id: str, follower: str, owner: str, heartbeat: float
    ) -> ReplyMeta | None:
        """Say that ``follower`` follows the reply (for ``heartbeat`` seconds), if it is
        ``owner``'s; its meta, or ``None`` when it is unknown, gone or another owner's."""
        reply = await self._call("follow", message_id, follower, round(heartbeat * 1000), owner)
        if not reply:
            return None
        fields = {text(k): text(v) for k, v in zip(reply[::2], reply[1::2], strict=True)}
        return _meta(fields)

    async def meta(self, message_id: str, owner: str) -> ReplyMeta | None:
        """The reply's meta, if it is ``owner``'s (no follower recorded)."""
        with unavailable_on_error("reply store", UNAVAILABLE):
            fields = await self.redis.hgetall(self._keys(message_id).meta)
        parsed = {text(k): text(v) for k, v in fields.items()}
        if parsed.get("owner") != owner:
            return None
        return _meta(parsed)

    async def unfollow(self, message_id: str, follower: str) -> None:
        with unavailable_on_error("reply store", UNAVAILABLE):
            await self.redis.zrem(self._keys(message_id).followers, follower)

    async def events(self, message_id: str, after: int, *, block: float = 0) -> list[ReplyEvent]:
        """The recorded events after the ``after``-th; with ``block``, waits up to that many
        seconds for one when there is none yet."""
        key = self._keys(message_id).events
        entries: list[Any]
        with unavailable_on_error("reply store", UNAVAILABLE):
            if block:
                found: Any = await self.redis.xread({key: f"0-{after}"}, block=round(block * 1000))
                entries = found[0][1] if found else []
            else:
                entries = list(await self.redis.xrange(key, f"(0-{after}", "+") or [])
        return [_event(entry_id, fields) for entry_id, fields in entries]

    async def stop(self, message_id: str, owner: str) -> bool:
        """Ask the instance generating ``owner``'s reply to stop it."""
        return bool(await self._call("stop", message_id, owner))

    async def remember_request(
        self, conversation_id: str, idempotency_key: str, message_id: str, ttl: float
    ) -> str | None:
        """Note that the POST with ``idempotency_key`` started ``message_id``; the message id
        an earlier POST with the same key started, if there was one."""
        key = request_key(conversation_id, idempotency_key, self.prefix)
        with unavailable_on_error("reply store", UNAVAILABLE):
            earlier: Any = await self.redis.set(
                key, message_id, nx=True, px=round(ttl * 1000), get=True
            )
        return None if earlier is None else text(earlier)

    async def request(self, conversation_id: str, idempotency_key: str) -> str | None:
        """The reply a POST with ``idempotency_key`` started in the conversation, if any."""
        key = request_key(conversation_id, idempotency_key, self.prefix)
        with unavailable_on_error("reply store", UNAVAILABLE):
            found = await self.redis.get(key)
        return None if found is None else text(found)

    async def forget(self, message_ids: Iterable[str]) -> None:
        """Delete these replies' records (their conversation was deleted): nobody may follow
        them any more. One call per reply, each its own hash tag."""
        for message_id in filter(valid_id, message_ids):
            keys = self._keys(message_id)
            with unavailable_on_error("reply store", UNAVAILABLE):
                await self.redis.delete(keys.meta, keys.events, keys.followers)

    async def _call(self, name: str, message_id: str, *args: str | int) -> Any:
        keys = self._keys(message_id)
        with unavailable_on_error("reply store", UNAVAILABLE):
            return await self._scripts[name](
                keys=[keys.meta, keys.events, keys.followers], args=list(args)
            )

    def _keys(self, message_id: str) -> ReplyKeys:
        return ReplyKeys.build(message_id, self.prefix)


def _meta(fields: dict[str, str]) -> ReplyMeta:
    return ReplyMeta(
        owner=fields["owner"],
        conversation_id=fields["conversation"],
        start=int(fields["start"]),
        pending=[Message.from_dict(m) for m in json.loads(fields["pending"])],
        status=fields["status"],
        position=int(fields.get("position", 0)),
        silent_for=int(fields.get("silent_ms", 0)) / 1000,
    )


def _event(entry_id: bytes | str, fields: dict[Any, Any]) -> ReplyEvent:
    values = {text(k): text(v) for k, v in fields.items()}
    number = int(text(entry_id).partition("-")[2])
    name = values["e"]
    assert name in ("delta", "done", "error")
    return ReplyEvent(number, name, json.loads(values["d"]))  # type: ignore[arg-type]
