"""Clients that leave at any point: while queued, at the first byte, mid-stream, during persist.

Whatever the point, nothing stays held (no permit, no session lease), the history stays
well-formed (every user turn has at most one reply; a partial one is marked ``cancelled``), and
the completion callback runs exactly once. First by hand at each point (in-process ASGI, real
Redis), then at random moments against a real server over raw sockets.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import httpx
import pytest
import redis as sync_redis
from fastapi import FastAPI
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response

from chatstream import ChatStream, Message, Outcome
from chatstream.conversations.redis_store import RedisConversationStore
from chatstream.conversations.store import Conversation
from chatstream.keys import DEFAULT_PREFIX
from sessions import RedisSessionStore, SessionMiddleware
from tests.chatstream.asgi import ManualRequest
from tests.chatstream.conftest import client_for
from tests.chatstream.scripted import ScriptedEngine
from tests.servers import running_server

from ..sse import parse_events, reply_text
from .state import (
    COOKIE,
    SECRET,
    assert_well_formed,
    errors_in,
    held_anything,
    lease_key,
    wait_for,
)

pytestmark = pytest.mark.redis

Point = Literal["queued", "first_byte", "mid_stream", "persist"]


class HeldWrites(RedisConversationStore):
    """Holds each write of a finished turn while ``holding``, until ``release`` is set."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis)
        self.holding = False
        self.saving = asyncio.Event()
        self.release = asyncio.Event()

    async def write(
        self,
        owner: str,
        conversation: Conversation,
        *,
        start: int,
        messages: Sequence[Message],
    ) -> Conversation | None:
        if self.holding:
            self.saving.set()
            await self.release.wait()
        return await super().write(owner, conversation, start=start, messages=messages)


@dataclass
class Chat:
    app: FastAPI
    chat_stream: ChatStream
    engine: ScriptedEngine
    store: HeldWrites
    outcomes: list[Outcome] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)


def make_chat(redis: Redis, deltas: list[str]) -> Chat:
    """A one-slot chat on real Redis whose ``/chat`` route records each callback."""
    engine = ScriptedEngine(deltas, slots=1)
    store = HeldWrites(redis)
    chat_stream = ChatStream(
        engine=engine,
        redis=redis,
        max_concurrent=1,
        conversation_store=store,
        detach_grace=0,  # the client leaving stops the reply at once
    )
    app = FastAPI()
    sessions = RedisSessionStore(redis, prefix=DEFAULT_PREFIX)  # the served app's layout
    app.add_middleware(SessionMiddleware, store=sessions, secret_key=SECRET, cookie_name=COOKIE)
    chat = Chat(app, chat_stream, engine, store)

    async def record(request: Request, outcome: Outcome) -> None:
        chat.outcomes.append(outcome)
        chat.ended.set()

    @app.post("/chat")
    async def chat_route(request: Request) -> Response:
        return await chat_stream.handle_chat_stream_request(request, callback=record)

    chat_stream.mount(app)
    return chat


async def leave_at(chat: Chat, point: Point, request: ManualRequest, k: int) -> None:
    """Run ``request``, its client leaving at ``point`` (``k``: deltas seen mid-stream)."""
    engine, store = chat.engine, chat.store
    if point == "queued":
        engine.pause_after = 0
        holder = asyncio.create_task(
            ManualRequest(chat.app, "/chat_stream", {"user_input": "holds the slot"}).run()
        )
        await engine.paused.wait()
        running = asyncio.create_task(request.run())
        admission = chat.chat_stream.admission_for(None)
        async with asyncio.timeout(5):
            while (await admission.load()).waiting != 1:  # noqa: ASYNC110 (state in Redis)
                await asyncio.sleep(0.01)
        request.leave.set()
        await running
        engine.resume.set()
        await holder
    elif point == "first_byte":
        request.leave_at_first_byte = True
        await request.run()
    elif point == "mid_stream":
        engine.pause_after = k
        running = asyncio.create_task(request.run())
        await engine.paused.wait()
        request.leave.set()
        engine.resume.set()
        await running
    else:
        store.holding = True
        running = asyncio.create_task(request.run())
        await store.saving.wait()
        request.leave.set()
        store.release.set()
        await running
        store.holding = False


def received_text(request: ManualRequest) -> str:
    """The reply's text as the client got it, in either format."""
    if request.accept == "text/event-stream":
        return reply_text(parse_events(request.text))
    return request.text


EXPECTED: dict[tuple[Point, str], Outcome] = {
    ("queued", "text/plain"): Outcome.CLIENT_DISCONNECTED_BEFORE_STREAMING,
    ("queued", "text/event-stream"): Outcome.CLIENT_DISCONNECTED_BEFORE_STREAMING,
    ("first_byte", "text/plain"): Outcome.CLIENT_DISCONNECTED_WHILE_STREAMING,
    ("first_byte", "text/event-stream"): Outcome.CLIENT_DISCONNECTED_WHILE_STREAMING,
    ("mid_stream", "text/plain"): Outcome.CLIENT_DISCONNECTED_WHILE_STREAMING,
    ("mid_stream", "text/event-stream"): Outcome.CLIENT_DISCONNECTED_WHILE_STREAMING,
    # Every delta had been generated before the turn was stored: the reply completed, whoever
    # was still there to see its end.
    ("persist", "text/plain"): Outcome.SUCCESS,
    ("persist", "text/event-stream"): Outcome.SUCCESS,
}


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("accept", ["text/plain", "text/event-stream"])
@pytest.mark.parametrize("point", ["queued", "first_byte", "mid_stream", "persist"])
async def test_a_client_leaving_at_any_point_leaves_nothing_behind(
    real_redis: Redis, point: Point, accept: str, seed: int
) -> None:
    rng = random.Random(f"{point}{accept}{seed}")
    deltas = [f"w{i} " for i in range(rng.randint(3, 8))]
    k = rng.randint(1, len(deltas) - 1)
    chat = make_chat(real_redis, deltas)
    async with client_for(chat.app) as client:
        assert (
            await client.post("/chat_stream", json={"user_input": "warm-up"})
        ).status_code == 200
        cookie = f"{COOKIE}={client.cookies[COOKIE]}"
        before = (await client.get("/get_prompt")).json()["messages"]

        leaving = ManualRequest(chat.app, "/chat", {"user_input": "leaves"}, cookie, accept)
        await leave_at(chat, point, leaving, k)

        await asyncio.wait_for(chat.ended.wait(), 10)  # the reply ends on its own, once stored
        assert chat.outcomes == [EXPECTED[point, accept]]
        messages = (await client.get("/get_prompt")).json()["messages"]
        assert_well_formed(messages)
        if point == "queued":
            assert messages == before
        else:
            # The stored reply holds what the client received, perhaps a delta more that was
            # generated as it left, and is marked unless it was complete.
            assert messages[:-2] == before
            assert messages[-2]["content"] == "leaves"
            reply, full = messages[-1], "".join(deltas)
            received = received_text(leaving)
            assert reply["content"].startswith(received)
            assert full.startswith(reply["content"])
            if point == "persist":
                assert (reply["content"], reply["finish_reason"]) == (full, "stop")
            else:
                assert reply["content"] != full
                assert reply["finish_reason"] == "cancelled"
        load = await chat.chat_stream.admission_for(None).load()
        assert (load.processing, load.waiting) == (0, 0)
        conversation_id = (await client.get("/get_prompt")).json()["conversation_id"]
        assert not await real_redis.exists(lease_key(conversation_id))
        chat.engine.pause_after = None
        assert (await client.post("/chat_stream", json={"regenerate": True})).status_code == 200
    assert len(chat.outcomes) == 1  # the callback ran exactly once
    await chat.chat_stream.aclose()


# -- at random moments, against a real server ----------------------------------------------------

CLIENTS = 30


def post_and_leave(
    port: int, payload: bytes, accept: str, start: float, after: float
) -> str | None:
    """Wait ``start`` seconds, POST over a raw socket and close it ``after`` seconds later,
    whatever came by then; the session cookie, if the response had started."""
    time.sleep(start)
    request = (
        f"POST /chat_stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        deadline = time.monotonic() + after
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
    found = re.search(rb"set-cookie: " + COOKIE.encode() + rb"=([^;]+)", received, re.IGNORECASE)
    return found.group(1).decode() if found else None


def outcomes_counted(server_url: str) -> float:
    metrics = httpx.get(f"{server_url}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("chatstream_outcomes_total{")
    )


def test_clients_leaving_at_random_moments_leave_nothing_behind(
    redis_url: str, redis_client: sync_redis.Redis
) -> None:
    rng = random.Random(7)
    args = ("--model", "mock", "--mock-token-delay", "0.02", "--max-concurrent", "2")
    with running_server(*args, env={"REDIS_URL": redis_url}) as server:
        # Replies of 0.3-0.7 s, two at a time, for clients arriving over 3 s and leaving within
        # 1 s: some leave while queued, some at the first byte, some mid-stream, some after.
        jobs = [
            (
                f'{{"user_input": "{" ".join(["w"] * rng.randint(1, 20))}"}}'.encode(),
                rng.choice(["text/plain", "text/event-stream"]),
                rng.uniform(0.0, 3.0),
                rng.uniform(0.0, 1.0),
            )
            for _ in range(CLIENTS)
        ]
        with ThreadPoolExecutor(CLIENTS) as pool:
            cookies = list(pool.map(lambda job: post_and_leave(server.port, *job), jobs))
        wait_for(lambda: outcomes_counted(server.url), lambda n: n == CLIENTS)
        wait_for(lambda: held_anything(redis_client), lambda held: not any(held.values()))
        for cookie in filter(None, cookies):
            with httpx.Client(base_url=server.url, cookies={COOKIE: cookie}) as client:
                messages = client.get("/get_prompt").json()["messages"]
                assert_well_formed(messages)
                assert len(messages) in (0, 2)
        assert errors_in(server.log()) == []
