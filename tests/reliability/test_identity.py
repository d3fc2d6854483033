"""Who a request is, on a real server: the user an authenticating proxy names (only when that
proxy is trusted), a new visitor's first requests, and a session's probes during an outage."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.servers import RedisProcess, running_server

from .state import COOKIE

MOCK = ("--model", "mock", "--mock-token-delay", "0")
PROXY = {"CHATSTREAM_TRUSTED_USER_HEADER": "X-Forwarded-User"}


def titles(client: httpx.Client, **headers: str) -> list[str]:
    listed = client.get("/conversations", headers=headers).json()["conversations"]
    return [c["title"] for c in listed]


def test_a_trusted_proxy_names_the_user_and_nobody_else_can() -> None:
    with running_server(*MOCK, env=PROXY) as server:  # the proxy: this host (127.0.0.1)
        alice = {"x-forwarded-user": "alice"}
        with (
            httpx.Client(base_url=server.url) as laptop,
            httpx.Client(base_url=server.url) as phone,
        ):
            laptop.post("/chat_stream", json={"user_input": "alice's plans"}, headers=alice)
            assert titles(phone, **alice) == ["alice's plans"]  # another device, same user
            assert titles(phone, **{"x-forwarded-user": "bob"}) == []
            assert titles(phone) == []  # without the header: an anonymous visitor
    untrusted = {**PROXY, "FORWARDED_ALLOW_IPS": "10.9.9.9"}
    with running_server(*MOCK, env=untrusted) as server, httpx.Client(base_url=server.url) as c:
        c.post(
            "/chat_stream", json={"user_input": "who am I?"}, headers={"x-forwarded-user": "alice"}
        )
        with httpx.Client(base_url=server.url) as other:
            assert titles(other, **{"x-forwarded-user": "alice"}) == []  # the header was ignored


@pytest.mark.redis
def test_a_signed_in_user_has_one_list_on_two_instances_and_nobody_else_sees_it(
    redis_url: str,
) -> None:
    """Two cookie jars (two devices) on two instances of one real Redis, each behind the
    authenticating proxy that names the user."""
    env = {**PROXY, "REDIS_URL": redis_url}
    run = uuid.uuid4().hex[:8]  # signed-in users' conversations never expire: new users
    alice, bob = {"x-forwarded-user": f"alice-{run}"}, {"x-forwarded-user": f"bob-{run}"}
    with (
        running_server(*MOCK, env=env) as a,
        running_server(*MOCK, env=env) as b,
        httpx.Client(base_url=a.url) as laptop,
        httpx.Client(base_url=b.url) as phone,
    ):
        laptop.post("/chat_stream", json={"user_input": "trip to Lisbon"}, headers=alice)
        created = phone.post("/conversations", json={"title": "groceries"}, headers=alice)
        assert created.status_code == 201
        phone.post("/chat_stream", json={"user_input": "milk, eggs"}, headers=alice)
        assert titles(laptop, **alice) == titles(phone, **alice) == ["groceries", "trip to Lisbon"]
        listed = laptop.get("/conversations", headers=alice).json()["conversations"]
        lisbon = next(c["id"] for c in listed if c["title"] == "trip to Lisbon")
        on_b = phone.get(f"/conversations/{lisbon}", headers=alice).json()["messages"]
        assert on_b[0]["content"] == "trip to Lisbon"
        with httpx.Client(base_url=b.url) as stranger:
            assert titles(stranger, **bob) == []
            assert stranger.get(f"/conversations/{lisbon}", headers=bob).status_code == 404
            assert stranger.delete(f"/conversations/{lisbon}", headers=bob).status_code == 404
        assert len(titles(laptop, **alice)) == 2  # nothing of alice's was touched


def test_a_new_visitors_first_requests_end_on_one_session() -> None:
    """A page loading (its page, list and history) while its first turn starts."""
    with running_server(*MOCK) as server, httpx.Client(base_url=server.url, timeout=30) as client:

        def get(path: str) -> httpx.Response:
            return httpx.get(f"{server.url}{path}")

        with ThreadPoolExecutor(4) as pool:
            reads = [pool.submit(get, path) for path in ("/", "/get_prompt", "/conversations")]
            turn = pool.submit(client.post, "/chat_stream", json={"user_input": "hello"})
            answers = [r.result() for r in reads]
            assert turn.result().status_code == 200
        assert all(a.status_code == 200 for a in answers)
        assert all("set-cookie" not in a.headers for a in answers)  # reading mints no session
        assert client.get("/get_prompt").json()["messages"][0]["content"] == "hello"


@pytest.mark.redis
def test_probes_with_a_cookie_answer_during_an_outage(private_redis: RedisProcess) -> None:
    env = {"REDIS_URL": private_redis.url}
    with running_server(*MOCK, env=env) as server, httpx.Client(base_url=server.url) as user:
        assert user.post("/chat_stream", json={"user_input": "hi"}).status_code == 200
        assert COOKIE in user.cookies
        private_redis.kill()
        assert user.get("/healthz").status_code == 200  # a session that is never loaded
        assert user.get("/static/app.js").status_code == 200
        refused = user.get("/get_prompt")
        assert (refused.status_code, refused.json()["error"]["code"]) == (503, "store_unavailable")
        assert user.get("/readyz").status_code == 503
