"""Redis killed under a real server, then started again: fast 503s, clean ends, no restart.

Each test runs a private redis-server (never the shared one) and kills it with SIGKILL.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.servers import RedisProcess, Server, redis_process, running_server

from ..sse import iter_events
from .state import COOKIE, assert_well_formed, errors_in, history, session_id, wait_for

pytestmark = pytest.mark.redis

ARGS = ("--model", "mock", "--mock-token-delay", "0.05", "--max-concurrent", "1")
SSE = {"accept": "text/event-stream"}


def stream_until_redis_dies(
    server: Server, redis: RedisProcess, kill: threading.Event, killed: threading.Event
) -> list[str]:
    """An SSE turn that, once streaming, kills Redis when told; its events, by name."""
    names = []
    long_input = {"user_input": " ".join(["word"] * 40)}  # the mock echoes it: 2.5 s of reply
    with (
        httpx.Client(base_url=server.url, timeout=30) as client,
        client.stream("POST", "/chat_stream", json=long_input, headers=SSE) as reply,
    ):
        for event in iter_events(reply.iter_lines()):
            names.append(event.name)
            if names.count("delta") == 1:
                assert kill.wait(10)
                redis.kill()
                killed.set()
    return names


def new_user_turn(server: Server) -> tuple[httpx.Response, float]:
    """A plain turn of a new user; its response and when it came."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post("/chat_stream", json={"user_input": "waiting"})
        return response, time.monotonic()


def burst(pool: ThreadPoolExecutor, server: Server) -> list[int]:
    """Eight requests at once, each of which uses Redis; their statuses."""
    params = {"temperature": 0.5}
    requests = [pool.submit(httpx.post, f"{server.url}/set_generation_params", json=params)]
    requests += [pool.submit(httpx.get, f"{server.url}/get_load") for _ in range(7)]
    return [request.result(10).status_code for request in requests]


def test_requests_get_503_at_once_streams_end_with_an_error_and_service_resumes(
    private_redis: RedisProcess,
) -> None:
    with (
        running_server(*ARGS, env={"REDIS_URL": private_redis.url}) as server,
        httpx.Client(base_url=server.url, timeout=30) as user,
        ThreadPoolExecutor(8) as pool,
    ):
        assert user.post("/chat_stream", json={"user_input": "before"}).status_code == 200
        assert burst(pool, server) == [200] * 8  # the server pools a connection for each
        # One turn streams (holding the one permit) and one waits when Redis is killed.
        kill, killed = threading.Event(), threading.Event()
        in_flight = pool.submit(stream_until_redis_dies, server, private_redis, kill, killed)
        wait_for(lambda: user.get("/get_load").json()["processing"], lambda n: n == 1)
        waiting = pool.submit(new_user_turn, server)
        wait_for(lambda: user.get("/get_load").json()["waiting"], lambda n: n == 1)
        kill.set()
        assert killed.wait(10)
        killed_at = time.monotonic()
        # The stream in flight ends with an error event (its reply could not be stored).
        assert in_flight.result(10)[-1] == "error"
        # The queued request learns within the queue's re-check interval (1 s).
        response, answered_at = waiting.result(10)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "store_unavailable"
        assert answered_at - killed_at < 1.5

        cookies = {COOKIE: user.cookies[COOKIE]}
        for method, path, payload, cookie in [
            ("POST", "/chat_stream", {"user_input": "during"}, cookies),
            ("POST", "/chat_stream", {"user_input": "during"}, {}),
            ("GET", "/get_prompt", None, cookies),
            ("POST", "/clear_context", None, cookies),
            ("POST", "/set_generation_params", {"temperature": 0.1}, {}),
            ("GET", "/get_load", None, {}),
            ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, {}),
        ]:
            with httpx.Client(base_url=server.url, cookies=cookie, timeout=30) as client:
                started = time.monotonic()
                response = client.request(method, path, json=payload)
                elapsed = time.monotonic() - started
            assert response.status_code == 503, (path, response.text)
            assert response.json()["error"]["code"] == "store_unavailable"
            assert int(response.headers["retry-after"]) >= 1
            assert elapsed < 1.0, (path, elapsed)
        # Probes send no cookie (one with a cookie gets the session middleware's 503).
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        assert httpx.get(f"{server.url}/readyz").status_code == 503
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'chatstream_outcomes_total{outcome="unknown_error_occurred"} 1.0' in metrics

        private_redis.start()
        # The same process serves again, at once: no restart, no error on its connections to
        # the old Redis, however many are pooled.
        wait_for(lambda: httpx.get(f"{server.url}/readyz").status_code, lambda s: s == 200)
        assert burst(pool, server) == [200] * 8
        # This Redis kept nothing (no persistence): the old cookie starts a new conversation.
        assert user.post("/chat_stream", json={"user_input": "after"}).status_code == 200
        assert (
            user.post("/chat_stream", json={"user_input": "again"}, headers=SSE).status_code == 200
        )
        assert [m["content"] for m in history(user)][::2] == ["after", "again"]
        assert_well_formed(history(user))
        completion = {"messages": [{"role": "user", "content": "x"}]}
        assert user.post("/v1/chat/completions", json=completion).status_code == 200
        # The queue works across instances again: its wake-up listener subscribed anew.
        both = [pool.submit(new_user_turn, server) for _ in range(2)]
        answers = [f.result(30)[0] for f in both]
        assert [r.status_code for r in answers] == [200, 200], (
            [r.text for r in answers],
            server.log().splitlines()[-30:],
        )
        load = user.get("/get_load").json()
        assert (load["processing"], load["waiting"]) == (0, 0)
        assert server.process.poll() is None
        log = server.log()
        assert session_id(user.cookies[COOKIE]) not in log
        assert "could not store the reply" in "\n".join(errors_in(log))


def test_an_append_only_redis_keeps_conversations_across_a_crash(tmp_path: Path) -> None:
    """What survives a Redis restart is Redis's own configuration: with ``appendonly yes`` and
    ``appendfsync always``, every finished turn does."""
    redis = redis_process(tmp_path, persistent=True)
    redis.start()
    try:
        with (
            running_server(*ARGS, env={"REDIS_URL": redis.url}) as server,
            httpx.Client(base_url=server.url, timeout=30) as user,
        ):
            assert user.post("/chat_stream", json={"user_input": "kept"}).status_code == 200
            redis.kill()
            redis.start()
            wait_for(lambda: httpx.get(f"{server.url}/readyz").status_code, lambda s: s == 200)
            assert user.post("/chat_stream", json={"user_input": "on"}).status_code == 200
            assert [m["content"] for m in history(user)][::2] == ["kept", "on"]
    finally:
        redis.kill()
