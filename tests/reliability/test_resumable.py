"""Replies that outlive their connection, against two real ``chatstream serve`` instances on real
Redis (loopback only): a dropped stream resumed on the other instance, stop from the other one,
the detach grace, a second tab, a retried POST, a stranger's attach, and clients that leave and
come back at random moments without breaking any guarantee."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
import redis as sync_redis

from tests.servers import Server, running_server

from ..sse import Event, iter_events, reply_text
from .state import (
    SEMAPHORE,
    assert_well_formed,
    errors_in,
    held_anything,
    history,
    wait_for,
)

pytestmark = pytest.mark.redis

TOKENS = 30  # the mock echoes its input, then its filler: a reply of 30 + 13 tokens
LONG = {"user_input": " ".join(f"word{i}" for i in range(TOKENS))}
SSE = {"accept": "text/event-stream"}
ARGS = ("--model", "mock", "--mock-token-delay", "0.03", "--rate-limit", "0")


@contextmanager
def two_instances(redis_url: str, *extra: str) -> Iterator[tuple[Server, Server]]:
    env = {"REDIS_URL": redis_url}
    with running_server(*ARGS, *extra, env=env) as a, running_server(*ARGS, *extra, env=env) as b:
        yield a, b


def read_events(response: httpx.Response, count: int | None = None) -> list[Event]:
    """The events of a streamed response: ``count`` of them (then stop reading), or all."""
    events = []
    for event in iter_events(response.iter_lines()):
        events.append(event)
        if count is not None and len([e for e in events if e.id]) == count:
            break
    return events


@contextmanager
def user(server: Server) -> Iterator[httpx.Client]:
    """A client with a session (a conversation made: the cookie it keeps)."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/conversations", json={}).status_code == 201
        yield client


def test_a_dropped_stream_resumes_on_the_other_instance_with_no_gap(
    redis_url: str, redis_client: sync_redis.Redis
) -> None:
    with two_instances(redis_url) as (a, b), user(a) as alice:
        with alice.stream("POST", "/chat_stream", json=LONG, headers=SSE) as first:
            message_id = first.headers["x-message-id"]
            before = read_events(first, 5)  # then the network drops
        with httpx.Client(base_url=b.url, cookies=alice.cookies, timeout=30) as other:
            headers = {**SSE, "last-event-id": str(before[-1].id)}
            with other.stream("GET", f"/chat_stream/{message_id}", headers=headers) as resumed:
                after = read_events(resumed)
        ids = [int(e.id) for e in before + after if e.id]
        assert ids == list(range(1, len(ids) + 1))  # no gap, no duplicate
        assert after[-1].name == "done" and after[-1].data["finish_reason"] == "stop"
        stored = history(alice)[-1]
        assert reply_text(before + after) == stored["content"]
        assert stored["finish_reason"] == "stop"  # whole, though its first client left
        wait_for(lambda: held_anything(redis_client), lambda held: not any(held.values()))


def test_stop_from_the_other_instance_within_a_second(
    redis_url: str, redis_client: sync_redis.Redis
) -> None:
    with two_instances(redis_url) as (a, b), user(a) as alice:
        started = threading.Event()
        events: list[Event] = []

        def stream() -> None:
            with alice.stream("POST", "/chat_stream", json=LONG, headers=SSE) as reply:
                for event in iter_events(reply.iter_lines()):
                    events.append(event)
                    started.set()

        with ThreadPoolExecutor(1) as pool:
            streaming = pool.submit(stream)
            assert started.wait(10)
            with httpx.Client(base_url=b.url, cookies=alice.cookies, timeout=10) as other:
                stopped = other.post("/stop_generation", json={})
            assert stopped.status_code == 200
            streaming.result(5)  # its stream ended soon after
        assert events[-1].name == "done" and events[-1].data["finish_reason"] == "cancelled"
        stored = history(alice)[-1]
        assert stored["finish_reason"] == "cancelled"
        assert stored["content"] == reply_text(events)
        assert len(stored["content"].split()) < TOKENS  # stopped well before its end
        wait_for(lambda: held_anything(redis_client), lambda held: not any(held.values()))


def test_a_reply_nobody_follows_stops_after_the_grace(
    redis_url: str, redis_client: sync_redis.Redis
) -> None:
    with two_instances(redis_url, "--detach-grace", "0.5") as (a, _), user(a) as alice:
        with alice.stream("POST", "/chat_stream", json=LONG, headers=SSE) as reply:
            read_events(reply, 2)
        wait_for(lambda: history(alice)[-1].get("status"), lambda status: status is None)
        stored = history(alice)[-1]
        assert stored["finish_reason"] == "cancelled"
        assert len(stored["content"].split()) < TOKENS
        wait_for(lambda: held_anything(redis_client), lambda held: not any(held.values()))


def test_a_second_tab_follows_the_running_reply_and_a_retried_post_stores_once(
    redis_url: str,
) -> None:
    with two_instances(redis_url) as (a, b), user(a) as alice:
        key = {**SSE, "idempotency-key": "a-retried-turn"}
        with alice.stream("POST", "/chat_stream", json=LONG, headers=key) as first:
            message_id = first.headers["x-message-id"]
            read_events(first, 1)
            with httpx.Client(base_url=b.url, cookies=alice.cookies, timeout=30) as tab:
                busy = tab.post("/chat_stream", json={"user_input": "me too"})
                assert busy.status_code == 409
                assert busy.json()["error"]["message_id"] == message_id
                shown = history(tab)[-1]
                assert (shown["status"], shown["message_id"]) == ("generating", message_id)
                with tab.stream("GET", f"/chat_stream/{message_id}", headers=SSE) as follow:
                    followed = read_events(follow)
        with (
            httpx.Client(base_url=b.url, cookies=alice.cookies, timeout=30) as retrying,
            retrying.stream("POST", "/chat_stream", json=LONG, headers=key) as again,
        ):
            assert again.headers["x-message-id"] == message_id
            retried = read_events(again)
        assert reply_text(followed) == reply_text(retried) == history(alice)[-1]["content"]
        messages = history(alice)
        assert [m["content"] for m in messages if m["role"] == "user"] == [LONG["user_input"]]
        assert_well_formed(messages)


def test_a_stranger_cannot_attach(redis_url: str) -> None:
    with (
        two_instances(redis_url) as (a, b),
        user(a) as alice,
        user(b) as mallory,
        httpx.Client(base_url=b.url) as anonymous,
    ):
        reply = alice.post("/chat_stream", json={"user_input": "private"})
        message_id = reply.headers["x-message-id"]
        for client in (mallory, anonymous):
            refused = client.get(f"/chat_stream/{message_id}", headers=SSE)
            assert (refused.status_code, refused.json()["error"]["code"]) == (404, "not_found")
        assert alice.get(f"/chat_stream/{message_id}").text == reply.text


CLIENTS = 12
TURNS = 3


def test_clients_that_leave_and_come_back_at_random_keep_every_guarantee(
    redis_url: str, redis_client: sync_redis.Redis
) -> None:
    """Each client chats on both instances; it drops its stream after a random number of
    events, resumes on a random instance after a random pause, or not at all. With a global
    limit of 2: the limit is never exceeded, every user turn has one reply at most, nothing
    stays held, and nothing is logged as an error."""
    extra = ("--max-concurrent", "2", "--max-per-client", "0", "--detach-grace", "1")
    with two_instances(redis_url, *extra) as (a, b):
        sampling, peak = threading.Event(), [0]

        def sample() -> None:
            while not sampling.is_set():
                peak[0] = max(peak[0], int(redis_client.zcard(SEMAPHORE.holders)))

        sampler = threading.Thread(target=sample)
        sampler.start()

        def chat(number: int) -> httpx.Cookies:
            rng = random.Random(number)
            with user(rng.choice((a, b))) as client:
                return chat_as(client, rng, number)

        def chat_as(client: httpx.Client, rng: random.Random, number: int) -> httpx.Cookies:
            for turn in range(TURNS):
                server = rng.choice((a, b))
                body = {"user_input": f"client {number} turn {turn} " + "x " * rng.randint(0, 9)}
                with (
                    httpx.Client(base_url=server.url, cookies=client.cookies, timeout=60) as c,
                    c.stream("POST", "/chat_stream", json=body, headers=SSE) as reply,
                ):
                    if reply.status_code != 200:
                        continue  # busy (the previous reply still runs), or queued out
                    message_id = reply.headers["x-message-id"]
                    seen = read_events(reply, rng.randint(0, 8))
                    if rng.random() < 0.7:  # comes back, maybe elsewhere
                        threading.Event().wait(rng.uniform(0, 0.5))
                        last = next((e.id for e in reversed(seen) if e.id), "0")
                        headers = {**SSE, "last-event-id": str(last)}
                        back = rng.choice((a, b))
                        with (
                            httpx.Client(
                                base_url=back.url, cookies=client.cookies, timeout=60
                            ) as r,
                            r.stream("GET", f"/chat_stream/{message_id}", headers=headers) as s,
                        ):
                            rest = read_events(s)
                        ids = [int(e.id) for e in seen + rest if e.id]
                        assert ids == list(range(1, len(ids) + 1)), ids
            return client.cookies

        with ThreadPoolExecutor(CLIENTS) as pool:
            all_cookies = list(pool.map(chat, range(CLIENTS)))
        for cookies in all_cookies:
            with httpx.Client(base_url=a.url, cookies=cookies, timeout=30) as client:
                wait_for(
                    lambda c=client: [m.get("status") for m in history(c)],  # type: ignore[misc]
                    lambda statuses: "generating" not in statuses,
                    timeout=30,
                )
                assert_well_formed(history(client))
        sampling.set()
        sampler.join()
        assert 0 < peak[0] <= 2
        wait_for(lambda: held_anything(redis_client), lambda held: not any(held.values()))
        assert errors_in(a.log()) == errors_in(b.log()) == []
