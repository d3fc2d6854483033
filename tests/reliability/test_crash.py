"""kill -9 of an instance mid-stream: what it held comes back within its TTL, and the other
instance serves the same users."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import httpx
import pytest
import redis as sync_redis

from tests.servers import Server, running_server

from .state import (
    SEMAPHORE,
    active_conversation,
    assert_well_formed,
    held_anything,
    history,
    lease_key,
    wait_for,
)

pytestmark = pytest.mark.redis

LEASE_TTL = 2.0
ARGS = (
    *("--model", "mock", "--mock-token-delay", "0.1", "--max-concurrent", "1"),
    *("--lease-ttl", str(LEASE_TTL)),
)


def stream_and_crash(victim: Server, cookies: httpx.Cookies, streaming: threading.Event) -> None:
    """A turn on ``victim`` that is still streaming when ``victim`` is killed."""
    with (
        httpx.Client(base_url=victim.url, cookies=cookies, timeout=30) as client,
        client.stream("POST", "/chat_stream", json={"user_input": "cut short"}) as reply,
    ):
        try:
            for _ in reply.iter_bytes():
                streaming.set()
        except httpx.TransportError:
            pass  # the server died mid-body


def first_byte_at(server: Server) -> float:
    """A new user's turn; when its reply started."""
    with (
        httpx.Client(base_url=server.url, timeout=30) as client,
        client.stream("POST", "/chat_stream", json={"user_input": "waits"}) as reply,
    ):
        assert reply.status_code == 200
        started = None
        for _ in reply.iter_bytes():
            started = started or time.monotonic()
    assert started is not None
    return started


def test_a_killed_instance_frees_its_permit_and_lease_within_the_ttl(
    redis_url: str, redis_client: sync_redis.Redis
) -> None:
    env = {"REDIS_URL": redis_url}
    with (
        running_server(*ARGS, env=env) as victim,
        running_server(*ARGS, env=env) as survivor,
        httpx.Client(base_url=victim.url, timeout=30) as user,
    ):
        assert user.post("/chat_stream", json={"user_input": "first"}).status_code == 200
        lease = lease_key(active_conversation(user))
        streaming = threading.Event()
        stream = threading.Thread(target=stream_and_crash, args=(victim, user.cookies, streaming))
        stream.start()
        assert streaming.wait(10)
        # What the stream holds cannot outlive its TTL, by Redis's own clock.
        assert 0 < redis_client.pttl(lease) <= LEASE_TTL * 1000
        holders = redis_client.zrange(SEMAPHORE.holders, 0, -1, withscores=True)
        ((_, expires_ms),) = cast(list[tuple[bytes, float]], holders)
        seconds, micros = redis_client.time()
        assert expires_ms - (seconds * 1000 + micros / 1000) <= LEASE_TTL * 1000

        victim.kill()
        killed_at = time.monotonic()
        stream.join(10)
        with (
            httpx.Client(base_url=survivor.url, cookies=user.cookies, timeout=30) as same_user,
            ThreadPoolExecutor(1) as pool,
        ):
            # Until its TTL runs out, the dead instance's lease still guards the session, and
            # its permit the one slot: another user's turn on the survivor waits for it.
            busy = same_user.post("/chat_stream", json={"user_input": "too soon"})
            assert busy.json()["error"]["code"] == "session_busy"
            granted_at = pool.submit(first_byte_at, survivor)
            wait_for(lambda: redis_client.exists(lease), lambda n: n == 0, timeout=LEASE_TTL)
            assert time.monotonic() - killed_at <= LEASE_TTL + 0.1
            assert granted_at.result(10) - killed_at <= LEASE_TTL + 0.5

            # The same user goes on, on the other instance, with the history up to the crash.
            assert same_user.post("/chat_stream", json={"user_input": "second"}).status_code == 200
            messages = history(same_user)
            assert_well_formed(messages)
            assert [m["content"] for m in messages][::2] == ["first", "second"]
        load = httpx.get(f"{survivor.url}/get_load").json()
        assert (load["processing"], load["waiting"]) == (0, 0)
        assert held_anything(redis_client) == {"permits": 0, "waiters": 0, "conversation leases": 0}
