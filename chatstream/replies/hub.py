"""A reply in this process: what its run writes, and what any number of followers read.

A :class:`ReplyHub` is the :class:`~chatstream.chat.sink.ReplySink` of a chat turn's run. It
keeps the reply's events (each delta, then ``done`` or ``error``) numbered 1, 2, … — the ids its
server-sent events carry — and its latest queue position, and hands them to every follower:
the request that asked for the reply, and any client that attaches to it on this instance
(another tab, a reloaded page). A follower that leaves takes nothing with it; the run learns
how many follow from :attr:`followers` (and, through the recorder, how many do elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ChatStreamError

EventName = Literal["delta", "done", "error"]
KEEP_ALIVE_INTERVAL = 15.0
"""Seconds between keep-alives a follower gets while nothing happens."""


@dataclass(frozen=True, slots=True)
class ReplyEvent:
    """The ``id``-th event of a reply (1-based)."""

    id: int
    name: EventName
    data: dict[str, Any]

    @property
    def final(self) -> bool:
        return self.name != "delta"


@dataclass(frozen=True, slots=True)
class Queued:
    """The reply waits in the queue at ``position``; ``eta_s`` estimates the wait."""

    position: int
    eta_s: float | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """The request was refused before generation: the asking client gets it as its answer."""

    error: ChatStreamError


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """Nothing happened for a while."""


FollowItem = ReplyEvent | Queued | Refused | KeepAlive


@dataclass(eq=False)
class ReplyHub:
    """One reply's events and followers in this process (see the module docstring)."""

    message_id: str
    estimate_wait: Callable[[int], float | None] = field(default=lambda position: None)
    events: list[ReplyEvent] = field(default_factory=list)
    queued_at: Queued | None = None
    refused: Refused | None = None
    started: bool = False
    ended: bool = False
    followers: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    on_followers: Callable[[], object] | None = None
    """Called whenever a follower comes or goes (the run's supervisor)."""

    @property
    def changed(self) -> asyncio.Event:
        """Set at the next change (a new event, a queue position, the end)."""
        return self._changed

    @property
    def text(self) -> str:
        """The reply so far."""
        return "".join(e.data["text"] for e in self.events if e.name == "delta")

    # -- what the run writes (ReplySink) --------------------------------------------------------

    async def start(self) -> None:
        self.started = True
        self._notify()

    async def queued(self, position: int) -> None:
        self.queued_at = Queued(position, self.estimate_wait(position))
        self._notify()

    async def keep_alive(self) -> None:
        """Followers keep their own connections alive."""

    async def delta(self, text: str) -> None:
        self._add("delta", {"text": text})
        # Let followers run between two deltas, even when the engine hands them over without
        # waiting: a follower that left is noticed before the next one.
        await asyncio.sleep(0)

    async def done(self, summary: dict[str, Any]) -> None:
        self._add("done", summary)

    async def error(self, error: ChatStreamError) -> None:
        self._add("error", {"code": error.code, "message": error.message, **error.details()})

    async def reject(self, error: ChatStreamError) -> None:
        self.refused = Refused(error)
        self.ended = True
        self._notify()

    async def end(self) -> None:
        self.ended = True
        self._notify()

    def _add(self, name: EventName, data: dict[str, Any]) -> None:
        if self.events and self.events[-1].final:
            return  # a reply has one end
        self.events.append(ReplyEvent(len(self.events) + 1, name, data))
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- what followers read ---------------------------------------------------------------------

    async def follow(
        self, after: int = 0, *, keep_alive: float = KEEP_ALIVE_INTERVAL
    ) -> AsyncGenerator[FollowItem, None]:
        """The reply's items after event ``after``: its queue position while it waits (when it
        changes), its events, a refusal, or keep-alives; until its end."""
        self._follower(+1)
        try:
            shown: Queued | None = None
            seen = max(0, after)
            while True:
                changed = self._changed
                if self.refused is not None:
                    yield self.refused
                    return
                if not self.started and self.queued_at is not None and self.queued_at != shown:
                    shown = self.queued_at
                    yield shown
                while seen < len(self.events):
                    event = self.events[seen]
                    seen += 1
                    yield event
                    if event.final:
                        return
                if self.ended:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(keep_alive):
                        await changed.wait()
                if not changed.is_set():
                    yield KeepAlive()
        finally:
            self._follower(-1)

    def _follower(self, change: int) -> None:
        self.followers += change
        if self.on_followers is not None:
            self.on_followers()
