"""Security defaults of the served app, on real servers: key rotation, cookie attributes behind
a proxy, session isolation across instances, no session id in the logs, API keys compared in
constant time."""

from __future__ import annotations

import hmac
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx
import pytest
import redis as sync_redis

from chatstream.app import create_app
from chatstream.config import key_digest
from chatstream.settings import Settings
from sessions.handle import new_session_id
from sessions.signing import CookieSigner
from tests.chatstream.conftest import client_for
from tests.servers import RedisProcess, Server, running_server

from .state import COOKIE, assert_well_formed, history, session_id

MOCK = ("--model", "mock", "--mock-token-delay", "0")
OLD, NEW, SHARED = ("old" * 11, "new" * 11, "shared" * 6)  # signing keys of 32+ bytes


@contextmanager
def servers(redis_url: str, *keys: str, args: tuple[str, ...] = MOCK) -> Iterator[list[Server]]:
    """One instance per signing-key setting, all on one Redis."""
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                running_server(*args, env={"REDIS_URL": redis_url, "CHATSTREAM_SECRET_KEY": key})
            )
            for key in keys
        ]


def said(server: Server, cookie: str | None) -> list[str]:
    """What the user of ``cookie`` said so far, as ``server`` sees it."""
    cookies = {COOKIE: cookie} if cookie else {}
    with httpx.Client(base_url=server.url, cookies=cookies) as client:
        return [m["content"] for m in history(client) if m["role"] == "user"]


def chat(server: Server, text: str, cookie: str | None = None) -> str:
    """One turn; the cookie the user holds afterwards."""
    cookies = {COOKIE: cookie} if cookie else {}
    with httpx.Client(base_url=server.url, cookies=cookies) as client:
        assert client.post("/chat_stream", json={"user_input": text}).status_code == 200
        return client.cookies[COOKIE]


@pytest.mark.redis
def test_key_rotation_keeps_every_session_readable_at_each_step(
    redis_url: str, redis_client: sync_redis.Redis
) -> None:
    """The documented rotation: append the new key (``old,new``: old signs, both verify),
    then put it first (``new,old``), then, after the sessions' absolute lifetime, drop the old.
    Instances at neighbouring steps read each other's cookies, so a rolling restart loses no
    one; a cookie no key verifies starts a new session, never an error."""
    steps = (OLD, f"{OLD},{NEW}", f"{NEW},{OLD}", NEW)
    with servers(redis_url, *steps) as (old, added, rotated, new):
        first = chat(old, "signed with old")
        assert CookieSigner(OLD).unsign(first) is not None
        for server in (added, rotated):
            assert said(server, first) == ["signed with old"]
        assert CookieSigner(OLD).unsign(chat(added, "new user during step 1")) is not None

        second = chat(rotated, "signed with new")
        assert CookieSigner(NEW).unsign(second) is not None
        assert CookieSigner(OLD).unsign(second) is None
        for server in (added, new):
            assert said(server, second) == ["signed with new"]
        # Two steps apart, a cookie is not read (a new, empty session), as documented.
        assert said(old, second) == []
        assert said(new, first) == []


@pytest.mark.redis
def test_sessions_are_isolated_across_instances(
    redis_url: str, redis_client: sync_redis.Redis
) -> None:
    args = (*MOCK, "--max-concurrent", "4")
    with servers(redis_url, SHARED, SHARED, args=args) as (a, b):
        alice = chat(a, "alice's secret")
        bob = chat(b, "bob's secret")
        assert said(b, alice) == ["alice's secret"]
        assert said(a, bob) == ["bob's secret"]
        assert said(a, None) == []
        with (
            httpx.Client(base_url=a.url, cookies={COOKIE: alice}) as as_alice,
            httpx.Client(base_url=b.url, cookies={COOKIE: bob}) as as_bob,
        ):
            alices_reply = history(as_alice)[-1]["message_id"]
            feedback = {"message_id": alices_reply, "is_like": False}
            assert as_bob.post("/set_feedback", json=feedback).status_code == 404
            assert as_bob.post("/set_generation_params", json={"max_new_tokens": 1}).is_success
            assert as_bob.post("/clear_context").status_code == 200
            assert as_alice.get("/get_generation_params").json()["max_new_tokens"] == 256
            assert history(as_alice)[0]["content"] == "alice's secret"
            assert_well_formed(history(as_alice))

            # Both generate at once, each under its own lease: no one is told "busy".
            results: list[int] = []
            started = threading.Barrier(2)

            def turn(client: httpx.Client) -> None:
                started.wait()
                results.append(client.post("/chat_stream", json={"user_input": "now"}).status_code)

            threads = [threading.Thread(target=turn, args=(c,)) for c in (as_alice, as_bob)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
            assert results == [200, 200]

        # Alice's id under another key, or bare, is never taken for Alice's session.
        alices_id = session_id(alice, SHARED)
        for forged in (CookieSigner("guess").sign(alices_id), alices_id, new_session_id()):
            assert said(b, forged) == []


@pytest.mark.redis
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_session_ids_are_never_logged(private_redis: RedisProcess, log_format: str) -> None:
    """At debug level, through turns, refusals, a new id after clearing, forged cookies and a
    Redis outage (whose errors are logged), no session id and no cookie shows in the log."""
    args = (*MOCK, "--log-level", "debug", "--log-format", log_format)
    seen: set[str] = set()
    with (
        running_server(*args, env={"REDIS_URL": private_redis.url}) as server,
        httpx.Client(base_url=server.url) as user,
    ):

        def remember(response: httpx.Response) -> None:
            for value in response.headers.get_list("set-cookie"):
                cookie = value.split(";")[0].split("=", 1)[1]
                if cookie:
                    seen.update((cookie, session_id(cookie)))

        user.event_hooks["response"] = [remember]
        user.post("/chat_stream", json={"user_input": "hello"})
        user.post(
            "/chat_stream", json={"regenerate": True}, headers={"accept": "text/event-stream"}
        )
        user.post("/chat_stream", json={"user_input": ""})
        user.post("/set_feedback", json={"message_id": "nope", "is_like": True})
        user.post("/clear_context")
        user.post("/chat_stream", json={"user_input": "after clearing"})
        forged = {COOKIE: CookieSigner("guess").sign(new_session_id())}
        with httpx.Client(base_url=server.url, cookies=forged) as stranger:
            stranger.event_hooks["response"] = [remember]
            stranger.get("/get_prompt")  # read only: no cookie for the new session it gets
            stranger.post("/set_generation_params", json={"temperature": 0})  # now one
        private_redis.kill()
        user.post("/chat_stream", json={"user_input": "during an outage"})
        user.get("/get_prompt")
        log = server.log()
    assert len(seen) >= 4
    assert "session store unavailable" in log  # the outage was logged...
    assert [secret for secret in seen if secret in log] == []  # ... without the session


def test_cookies_are_httponly_samesite_and_secure_behind_a_trusted_proxy() -> None:
    """The served app honours ``X-Forwarded-Proto`` only from the proxies uvicorn trusts
    (``FORWARDED_ALLOW_IPS``, by default this host's loopback: a proxy on the same machine)."""
    https = {"x-forwarded-proto": "https"}

    def new_session_cookie(server: Server, headers: dict[str, str] | None = None) -> str:
        url = f"{server.url}/set_generation_params"
        return httpx.post(url, json={"top_k": 5}, headers=headers).headers["set-cookie"]

    with running_server(*MOCK) as server:
        plain = new_session_cookie(server)
        proxied = new_session_cookie(server, https)
    with running_server(*MOCK, env={"FORWARDED_ALLOW_IPS": "127.0.0.2"}) as server:
        untrusted = new_session_cookie(server, https)
    for cookie in (plain, proxied, untrusted):
        attributes = cookie.split("; ")[1:]
        assert {"HttpOnly", "SameSite=Lax", "Path=/"} <= set(attributes)
    assert "Secure" in proxied.split("; ")
    assert proxied.startswith(f"__Host-{COOKIE}=")  # on https: no subdomain can plant one
    assert plain.startswith(f"{COOKIE}=") and untrusted.startswith(f"{COOKIE}=")
    assert "Secure" not in plain.split("; ")
    assert "Secure" not in untrusted.split("; ")


async def test_api_keys_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request compares its token with every key through ``hmac.compare_digest``, whole,
    whether it matches, matches a later key, is a prefix, or has the wrong scheme."""
    alpha, bravo, charlie = (f"{name}-key-{'x' * 32}" for name in ("alpha", "bravo", "charlie"))
    keys = [alpha, bravo, charlie]
    compared: list[tuple[bytes, bytes]] = []
    compare_digest = hmac.compare_digest

    def recording(given: bytes, key: bytes) -> bool:
        compared.append((given, key))
        return compare_digest(given, key)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    app = create_app(Settings(model="mock", secret_key="k", api_keys=",".join(keys)))
    async with client_for(app) as client:
        for authorization, status in [
            (f"Bearer {alpha}", 200),
            (f"Bearer {charlie}", 200),
            ("Bearer alpha", 401),
            (f"Bearer {alpha}X", 401),
            ("Bearer ", 401),
            (f"Basic {alpha}", 401),
            ("", 401),
        ]:
            compared.clear()
            response = await client.get("/v1/models", headers={"authorization": authorization})
            assert response.status_code == status, authorization
            token = key_digest(authorization.partition(" ")[2].strip())
            assert compared == [(token, key_digest(key)) for key in keys]
