"""A chat turn's run outliving its request: it goes on while anyone follows it, and records its
events in Redis for the other instances.

:class:`RunningReply` runs a turn in a task of its own, into a :class:`~chatstream.replies.hub.
ReplyHub` that the asking request and any attached client follow. Two background loops go with
it: one records the new events (at most every :data:`FLUSH_INTERVAL` while they arrive) and
learns, in the same call, whether someone asked the reply to stop and how many clients follow it
from other instances; the other stops it ``detach_grace`` seconds after the last follower left
(at once with a grace of 0, as when a reply was bound to its connection). :class:`Replies` keeps
this instance's running replies, to attach to them and to stop them all at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from ..chat.run import GenerationRun
from ..config import ReplyConfig
from ..conversations.prompt import Message
from ..errors import ChatStreamError
from ..tasks import BackgroundLoop
from .hub import ReplyHub
from .store import ReplyStore

logger = logging.getLogger("chatstream")

FLUSH_INTERVAL = 0.2
"""Seconds events wait, at most, to be recorded together: at most 5 Redis calls a second per
reply (at 0.1 s, one stream's recording cost ~4 % of its throughput on 2 CPUs; followers on
other instances see the events in fifths of a second, which a reader does not notice)."""
CONTROL_INTERVAL = 0.25
"""Seconds between records while nothing new comes: a stop asked elsewhere is seen this soon."""
RECORDS_PER_SECOND = 40.0
"""Record calls a second that one instance's replies make together, at most, once enough of
them run that their own intervals would add up to more: each reply's intervals then stretch
(16 replies: 0.4 s), so that recording never takes a growing share of the CPU the model needs
(with the embedded store its scripts run in this very process). Followers elsewhere see events
that much later; those on this instance see them at once."""
HEARTBEAT = 3.0
"""Seconds a follower on another instance counts after its last heartbeat."""


class RunningReply:
    """One turn's run, its hub, and what keeps it recorded and supervised."""

    def __init__(
        self,
        run: GenerationRun,
        hub: ReplyHub,
        config: ReplyConfig,
        *,
        owner: str,
        conversation_id: str,
        start: int,
        pending: Sequence[Message],
        store: ReplyStore | None,
    ) -> None:
        self.run = run
        self.hub = hub
        self.config = config
        self.owner = owner
        self.conversation_id = conversation_id
        self.start_at = start
        self.pending = list(pending)
        self.store = store if config.record else None
        self.remote_followers = 0
        self._recorded = 0
        self._wake = asyncio.Event()  # a follower came or went, here or elsewhere
        self._followed = False
        hub.on_followers = self._followers_changed
        self._recorder: BackgroundLoop | None = None
        self.task: asyncio.Task[None] | None = None
        self.running_here = 1
        """How many replies run on this instance (kept by :class:`Replies`): the pace."""

    @property
    def message_id(self) -> str:
        return self.hub.message_id

    async def start(self) -> None:
        """Note the reply in Redis (``ServiceUnavailable`` when that fails: nothing started),
        then run it in a task of its own."""
        if self.store is not None:
            await self.store.begin(
                self.message_id,
                owner=self.owner,
                conversation_id=self.conversation_id,
                start=self.start_at,
                pending=self.pending,
                ttl=self.config.reply_ttl,
            )
        self.task = asyncio.create_task(self._run(), name=f"reply {self.message_id}")

    def stop(self) -> None:
        """Stop generating now; the reply so far is stored ``cancelled``."""
        self.run.interrupt("stopped")

    async def _run(self) -> None:
        if self.store is not None:
            self._recorder = BackgroundLoop(self._record, name="record")
        supervisor = asyncio.create_task(self._supervise())
        try:
            await self.run.stream(self.hub)
        finally:
            supervisor.cancel()
            if self._recorder is not None:
                await self._recorder.stop()
                try:
                    await self._record_now("ended")
                except ChatStreamError:  # followers elsewhere fall back to the conversation
                    logger.warning("could not record the end of reply %s", self.message_id)

    # -- recording -------------------------------------------------------------------------------

    async def _record(self) -> None:
        assert self._recorder is not None
        changed = self.hub.changed
        share = self.running_here / RECORDS_PER_SECOND
        if len(self.hub.events) == self._recorded:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(CONTROL_INTERVAL, share)):
                    await changed.wait()
        if changed.is_set():
            # gather the deltas that follow
            await self._recorder.pause(max(FLUSH_INTERVAL, share))
        status = "generating" if self.hub.started else "queued"
        try:
            await self._record_now(status)
        except ChatStreamError:
            logger.warning("could not record reply %s; other instances lag", self.message_id)

    async def _record_now(self, status: str) -> None:
        assert self.store is not None
        events = self.hub.events[self._recorded :]
        position = self.hub.queued_at.position if self.hub.queued_at else 0
        control = await self.store.record(
            self.message_id, events, status=status, position=position, ttl=self.config.reply_ttl
        )
        self._recorded += len(events)
        if control.followers != self.remote_followers:
            self.remote_followers = control.followers
            self._wake.set()
        if control.stop and status != "ended":
            self.stop()

    # -- the detach grace ------------------------------------------------------------------------

    def _followers_changed(self) -> None:
        self._followed = self._followed or self.hub.followers > 0
        if self._deserted() and not self.config.detach_grace:
            self.run.interrupt("client_left")  # no grace: at once, as the last one leaves
        self._wake.set()

    def _deserted(self) -> bool:
        return self._followed and not (self.hub.followers or self.remote_followers)

    async def _supervise(self) -> None:
        """Stop the reply ``detach_grace`` seconds after its last follower, here or elsewhere,
        left (once one had followed)."""
        loop = asyncio.get_running_loop()
        left_at = 0.0
        while True:
            self._wake.clear()
            if not self._deserted():
                left_at = 0.0
                timeout = None if self._followed else CONTROL_INTERVAL
            else:
                now = loop.time()
                left_at = left_at or now
                remaining = self.config.detach_grace - (now - left_at)
                if remaining <= 0:
                    self.run.interrupt("client_left")
                    return
                timeout = min(remaining, CONTROL_INTERVAL)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()


class Replies:
    """This instance's running replies, by message id."""

    def __init__(self) -> None:
        self._running: dict[str, RunningReply] = {}

    def get(self, message_id: str) -> RunningReply | None:
        return self._running.get(message_id)

    async def start(self, reply: RunningReply) -> None:
        await reply.start()
        assert reply.task is not None
        self._running[reply.message_id] = reply
        self._paced()

        def ended(_: object) -> None:
            self._running.pop(reply.message_id, None)
            self._paced()

        reply.task.add_done_callback(ended)

    def _paced(self) -> None:
        for running in self._running.values():
            running.running_here = len(self._running)

    async def aclose(self) -> None:
        """Stop every running reply (stored as they are) and wait for them."""
        running = list(self._running.values())
        for reply in running:
            reply.run.interrupt("shutdown")
        await asyncio.gather(*(r.task for r in running if r.task), return_exceptions=True)
