"""What the suites check in Redis and in a conversation, whichever server produced them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx
import redis as sync_redis

from chatstream.keys import DEFAULT_PREFIX, ConversationKeys, SemaphoreKeys
from sessions.signing import CookieSigner
from tests.servers import wait_for as wait_for  # where the suites have always found it

SECRET = "chatstream-test-secret-0123456789abcdef"  # what chatstream.testing.serve signs with
COOKIE = "chatstream_session"
SEMAPHORE = SemaphoreKeys.build("generation")
LEASES = f"{DEFAULT_PREFIX}conv:*:lease"
FINISH_REASONS = {"stop", "length", "cancelled", "error"}


def session_id(cookie: str, secret: str = SECRET) -> str:
    """The session id a signed cookie value carries."""
    found = CookieSigner(secret).unsign(cookie)
    assert found is not None, "not a cookie this server signed"
    return found


def lease_key(conversation_id: str) -> str:
    """Where a conversation's lease (held while one of its replies generates) lives."""
    return ConversationKeys.build(conversation_id).lease


def active_conversation(client: httpx.Client | httpx.AsyncClient) -> str:
    """The id of the active conversation of ``client``'s session (a synchronous client)."""
    assert isinstance(client, httpx.Client)
    conversation_id: str = client.get("/get_prompt").json()["conversation_id"]
    return conversation_id


def live_permits(client: sync_redis.Redis) -> int:
    """Admission permits whose lease has not run out, by Redis's clock."""
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    return int(client.zcount(SEMAPHORE.holders, f"({now_ms}", "+inf"))


def held_anything(client: sync_redis.Redis) -> dict[str, int]:
    """Every permit, waiter and conversation lease still in Redis (expired or not): all 0 at
    rest."""
    return {
        "permits": int(client.zcard(SEMAPHORE.holders)),
        "waiters": int(client.zcard(SEMAPHORE.queue)),
        "conversation leases": sum(1 for _ in client.scan_iter(match=LEASES, count=1000)),
    }


def history(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/get_prompt")
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def assert_well_formed(messages: Sequence[Mapping[str, Any]]) -> None:
    """Every user turn has at most one reply; every reply has its own message id, a finish
    reason, and follows a user turn (a partial one is marked ``cancelled`` or ``error``)."""
    previous = "assistant"
    ids = [m["message_id"] for m in messages if m["role"] == "assistant"]
    assert len(ids) == len(set(ids)), f"a message id appears twice: {messages}"
    for message in messages:
        assert message["role"] in ("user", "assistant"), message
        if message["role"] == "assistant":
            assert previous == "user", f"a reply without its own user turn: {messages}"
            assert message["finish_reason"] in FINISH_REASONS, message
            assert re.fullmatch(r"[0-9a-f]{32}", message["message_id"]), message
        previous = message["role"]


def errors_in(log: str, secrets: Iterable[str] = ()) -> list[str]:
    """Lines of a server log that report an error, or that show any of ``secrets``."""
    shown = [s for s in secrets if s in log]
    lines = log.splitlines()
    return [f"secret in the log: {s[:6]}…" for s in shown] + [
        line for line in lines if re.search(r"\b(ERROR|CRITICAL)\b|Traceback", line)
    ]
