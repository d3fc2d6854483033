"""Load: two instances, 50 clients each, on the mock engine, with a small global limit.

Runs ``CHATSTREAM_LOAD_SECONDS`` seconds (default 20; the issue's full run is 60). Each client
is a user with its own session who chats turn after turn, its turns spread over both instances
as a load balancer without sticky sessions would. A thread samples the permits held in Redis
meanwhile. All traffic stays on loopback.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest
import redis as sync_redis

from tests.servers import Server, running_server

from ..sse import parse_events, reply_text
from .state import SEMAPHORE, assert_well_formed, errors_in, held_anything, wait_for

pytestmark = pytest.mark.redis

SECONDS = float(os.environ.get("CHATSTREAM_LOAD_SECONDS", "20"))
CLIENTS_PER_INSTANCE = 50
LIMIT = 4
QUEUE_TIMEOUT = 60
ARGS = (
    *("--model", "mock", "--mock-token-delay", "0.01", "--max-concurrent", str(LIMIT)),
    *("--max-queue", str(4 * CLIENTS_PER_INSTANCE), "--queue-timeout", str(QUEUE_TIMEOUT)),
    # Every simulated user comes from 127.0.0.1: the per-client limits would see one client.
    *("--max-per-client", "0", "--rate-limit", "0"),
)


@dataclass
class Turn:
    user_input: str
    status: int  # 0: no HTTP answer (``error`` says why)
    message_id: str = ""
    text: str = ""  # the reply as streamed
    error: str = ""


@dataclass
class User:
    number: int
    turns: list[Turn] = field(default_factory=list)
    cookies: httpx.Cookies = field(default_factory=httpx.Cookies)  # once done


class PermitSampler(threading.Thread):
    """Reads how many permits Redis holds, as often as it can, until stopped."""

    def __init__(self, client: sync_redis.Redis) -> None:
        super().__init__()
        self.client = client
        self.samples: list[int] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.samples.append(int(self.client.zcard(SEMAPHORE.holders)))
            time.sleep(0.002)


async def take_turn(client: httpx.AsyncClient, user: User, server: Server, sse: bool) -> Turn:
    user_input = f"user {user.number} turn {len(user.turns)}"
    headers = {"accept": "text/event-stream"} if sse else {}
    url = f"{server.url}/chat_stream"
    async with client.stream(
        "POST", url, json={"user_input": user_input}, headers=headers
    ) as reply:
        body = (await reply.aread()).decode()
    turn = Turn(user_input, reply.status_code)
    if reply.status_code != 200:
        turn.error = body[:500]
        return turn
    if not sse:
        turn.message_id, turn.text = reply.headers["x-message-id"], body
        return turn
    events = parse_events(body)
    assert events[-1].name == "done", events[-1]
    turn.message_id = events[-1].data["message_id"]
    turn.text = reply_text(events)
    return turn


async def chat_until(deadline: float, user: User, servers: list[Server]) -> None:
    rng = random.Random(user.number)
    # A new connection per turn: a pooled one left idle while the user waits on the other
    # instance may be closed by the server (keep-alive timeout) just as it is reused.
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=QUEUE_TIMEOUT + 30, limits=fresh) as client:
        while time.monotonic() < deadline:
            server = servers[(user.number + len(user.turns)) % len(servers)]
            sse = rng.random() < 0.5
            try:
                user.turns.append(await take_turn(client, user, server, sse))
            except httpx.TransportError as exc:
                failed = Turn(f"user {user.number} turn {len(user.turns)}", 0, error=repr(exc))
                user.turns.append(failed)
        user.cookies = client.cookies


def warnings_in(log: str) -> list[str]:
    """A server log's warnings and errors: what a failed turn's cause is looked for in."""
    return [line for line in log.splitlines() if "WARNING" in line] + errors_in(log)


def assert_stored_exactly_once(user: User, server: Server) -> None:
    with httpx.Client(base_url=server.url, cookies=user.cookies) as client:
        messages = client.get("/get_prompt").json()["messages"]
    assert_well_formed(messages)
    served = [turn for turn in user.turns if turn.status == 200]
    assert [m["content"] for m in messages if m["role"] == "user"] == [
        turn.user_input for turn in served
    ]
    replies = [m for m in messages if m["role"] == "assistant"]
    assert [(m["message_id"], m["content"]) for m in replies] == [
        (turn.message_id, turn.text) for turn in served
    ]
    assert {m["finish_reason"] for m in replies} <= {"stop"}


def test_two_instances_under_load_keep_the_limit_and_every_reply(
    redis_url: str, redis_client: sync_redis.Redis
) -> None:
    env = {"REDIS_URL": redis_url}
    with running_server(*ARGS, env=env) as a, running_server(*ARGS, env=env) as b:
        sampler = PermitSampler(redis_client)
        users = [User(number) for number in range(2 * CLIENTS_PER_INSTANCE)]

        async def everyone() -> None:
            deadline = time.monotonic() + SECONDS
            await asyncio.gather(*(chat_until(deadline, user, [a, b]) for user in users))

        sampler.start()
        try:
            asyncio.run(everyone())
        finally:
            sampler.stopped.set()
            sampler.join()

        turns = [turn for user in users for turn in user.turns]
        failed = [turn for turn in turns if turn.status != 200]
        assert not failed, (failed[:5], [warnings_in(s.log())[:5] for s in (a, b)])
        assert len(turns) >= SECONDS * LIMIT  # the service kept busy
        assert max(sampler.samples) == LIMIT  # reached, never exceeded
        for user in users:
            assert_stored_exactly_once(user, b if user.number % 2 else a)
        wait_for(lambda: held_anything(redis_client), lambda held: not any(held.values()))
        for server in (a, b):
            load = httpx.get(f"{server.url}/get_load").json()
            assert (load["processing"], load["waiting"]) == (0, 0)
            errors = errors_in(server.log())
            assert not errors, "\n".join(errors[:10])
