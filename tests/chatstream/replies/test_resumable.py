"""Replies that outlive their connection, in one process or two on one Redis: reload, resume
with Last-Event-ID, a second tab, stop from anywhere, the detach grace, retried POSTs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response

from chatstream import ChatStream, Outcome
from chatstream.errors import ServiceUnavailable
from chatstream.keys import ReplyKeys
from chatstream.replies import follow, running
from sessions import RedisSessionStore, SessionMiddleware

from ...sse import parse_events, reply_text
from ..asgi import ManualRequest
from ..conftest import SECRET, client_for
from ..scripted import ScriptedEngine
from ..test_chat_stream import cookie_header, wait_until

DELTAS = ["One", " two", " three", " four", " five"]
SSE = "text/event-stream"


class Instance:
    """One app (an instance of the service) on a shared Redis, recording each callback."""

    def __init__(self, redis: Redis, **options: Any) -> None:
        self.engine = ScriptedEngine(DELTAS)
        self.chat_stream = ChatStream(engine=self.engine, redis=redis, **options)
        self.outcomes: list[Outcome] = []
        self.ended = asyncio.Event()
        app = FastAPI()

        async def record(request: Request, outcome: Outcome) -> None:
            self.outcomes.append(outcome)
            self.ended.set()

        @app.post("/chat")
        async def chat(request: Request) -> Response:
            return await self.chat_stream.handle_chat_stream_request(request, callback=record)

        self.chat_stream.mount(app)
        app.add_middleware(SessionMiddleware, store=RedisSessionStore(redis), secret_key=SECRET)
        self.app = app


@pytest.fixture
async def one(redis: Redis) -> AsyncIterator[Instance]:
    instance = Instance(redis)
    yield instance
    await instance.chat_stream.aclose()


@pytest.fixture
async def two(redis: Redis) -> AsyncIterator[Instance]:
    instance = Instance(redis)
    yield instance
    await instance.chat_stream.aclose()


async def session_of(app: FastAPI) -> tuple[httpx.AsyncClient, str]:
    """A client with a session (a conversation made), and its cookie header."""
    client = client_for(app)
    assert (await client.post("/conversations", json={})).status_code == 201
    return client, cookie_header(client)


def ids_and_text(request: ManualRequest) -> tuple[list[int], str]:
    events = [e for e in parse_events(request.text) if e.id is not None]
    return [int(e.id) for e in events if e.id], reply_text(events)


async def test_sse_events_carry_ids_and_a_reload_resumes_after_the_last_one(
    one: Instance,
) -> None:
    client, cookie = await session_of(one.app)
    one.engine.pause_after = 2
    asking = ManualRequest(one.app, "/chat", {"user_input": "hi"}, cookie, SSE)
    running = asyncio.create_task(asking.run())
    await one.engine.paused.wait()
    asking.leave.set()  # the page reloads: its request is gone, the reply is not
    await running
    seen, text = ids_and_text(asking)
    assert (seen, text) == ([1, 2], "One two")
    prompt = (await client.get("/get_prompt")).json()
    running_reply = prompt["messages"][-1]
    assert running_reply["status"] == "generating"
    assert prompt["messages"][-2]["content"] == "hi"  # its user message, already shown
    message_id = running_reply["message_id"]
    resumed = ManualRequest(
        one.app,
        f"/chat_stream/{message_id}",
        {},
        cookie,
        SSE,
        method="GET",
        headers={"last-event-id": "2"},
    )
    following = asyncio.create_task(resumed.run())
    one.engine.resume.set()
    await following
    more, rest = ids_and_text(resumed)
    assert more == [3, 4, 5, 6]  # no gap, no duplicate: three deltas, then done
    assert text + rest == "".join(DELTAS)
    assert parse_events(resumed.text)[-1].name == "done"
    await one.ended.wait()
    assert one.outcomes == ["success"]
    stored = (await client.get("/get_prompt")).json()["messages"][-1]
    assert (stored["content"], stored["finish_reason"]) == ("".join(DELTAS), "stop")
    await client.aclose()


async def test_another_instance_serves_a_reply_from_its_record(
    one: Instance, two: Instance
) -> None:
    client, cookie = await session_of(one.app)
    one.engine.pause_after = 3
    asking = ManualRequest(one.app, "/chat", {"user_input": "hi"}, cookie, SSE)
    running = asyncio.create_task(asking.run())
    await one.engine.paused.wait()
    message_id = asking_id(asking)
    elsewhere = ManualRequest(
        two.app, f"/chat_stream/{message_id}?last_event_id=1", {}, cookie, SSE, method="GET"
    )
    following = asyncio.create_task(elsewhere.run())
    await wait_until(lambda: asyncio.sleep(0, elsewhere.text), lambda text: "three" in text)
    one.engine.resume.set()
    await asyncio.gather(running, following)
    ids, text = ids_and_text(elsewhere)
    assert ids == [2, 3, 4, 5, 6]
    assert "One" + text == "".join(DELTAS)
    plain = ManualRequest(two.app, f"/chat_stream/{message_id}", {}, cookie, method="GET")
    await plain.run()  # after its end, from the record: the whole text
    assert plain.text == "".join(DELTAS)
    await client.aclose()


def asking_id(request: ManualRequest) -> str:
    start = next(m for m in request.sent if m["type"] == "http.response.start")
    message_id: str = dict(start["headers"])[b"x-message-id"].decode()
    return message_id


async def test_a_second_tab_is_told_the_running_reply_and_follows_it(one: Instance) -> None:
    client, cookie = await session_of(one.app)
    one.engine.pause_after = 1
    first = ManualRequest(one.app, "/chat", {"user_input": "hi"}, cookie, SSE)
    running = asyncio.create_task(first.run())
    await one.engine.paused.wait()
    busy = await client.post("/chat_stream", json={"user_input": "me too"})
    assert busy.status_code == 409
    error = busy.json()["error"]
    assert error["code"] == "session_busy" and error["message_id"] == asking_id(first)
    tab = ManualRequest(
        one.app, f"/chat_stream/{error['message_id']}", {}, cookie, SSE, method="GET"
    )
    following = asyncio.create_task(tab.run())
    one.engine.resume.set()
    await asyncio.gather(running, following)
    assert ids_and_text(tab) == ids_and_text(first)  # the same events, from the start
    await client.aclose()


async def test_only_the_owner_may_attach_or_stop(one: Instance) -> None:
    client, _ = await session_of(one.app)
    reply = await client.post("/chat_stream", json={"user_input": "mine"})
    message_id = reply.headers["x-message-id"]
    async with client_for(one.app) as stranger:
        await stranger.post("/conversations", json={})
        for path in (f"/chat_stream/{message_id}", "/chat_stream/unknown", "/chat_stream/{x}"):
            answer = await stranger.get(path)
            assert (answer.status_code, answer.json()["error"]["code"]) == (404, "not_found")
        refused = await stranger.post("/stop_generation", json={"message_id": message_id})
        assert refused.status_code == 409
    assert (await client.get(f"/chat_stream/{message_id}")).text == "".join(DELTAS)
    await client.aclose()


async def test_after_its_record_expired_a_reply_answers_from_its_conversation(
    one: Instance, redis: Redis
) -> None:
    client, _ = await session_of(one.app)
    reply = await client.post("/chat_stream", json={"user_input": "hi"})
    message_id = reply.headers["x-message-id"]
    keys = ReplyKeys.build(message_id)
    await redis.delete(keys.meta, keys.events, keys.followers)  # as reply_ttl would
    plain = await client.get(f"/chat_stream/{message_id}")
    assert plain.text == "".join(DELTAS)
    events = parse_events(
        (await client.get(f"/chat_stream/{message_id}", headers={"accept": SSE})).text
    )
    assert [(e.name, e.id) for e in events] == [("delta", "1"), ("done", "2")]
    later = await client.get(
        f"/chat_stream/{message_id}", headers={"accept": SSE, "last-event-id": "4"}
    )
    (done,) = parse_events(later.text)
    assert (done.name, done.data["content"]) == ("done", "".join(DELTAS))
    await client.aclose()


async def test_a_deleted_conversations_replies_cannot_be_followed(
    one: Instance, redis: Redis
) -> None:
    client, _ = await session_of(one.app)
    reply = await client.post("/chat_stream", json={"user_input": "secret plans"})
    message_id = reply.headers["x-message-id"]
    conversation_id = (await client.get("/get_prompt")).json()["conversation_id"]
    assert (await client.get(f"/chat_stream/{message_id}")).status_code == 200
    assert (await client.delete(f"/conversations/{conversation_id}")).status_code == 204
    assert (await client.get(f"/chat_stream/{message_id}")).status_code == 404
    keys = ReplyKeys.build(message_id)
    assert await redis.exists(keys.meta, keys.events, keys.followers) == 0
    await client.aclose()


async def test_stop_from_anywhere_stores_the_reply_so_far_and_frees_everything(
    one: Instance, two: Instance
) -> None:
    client, cookie = await session_of(one.app)
    one.engine.pause_after = 2
    asking = ManualRequest(one.app, "/chat", {"user_input": "hi"}, cookie, SSE)
    running = asyncio.create_task(asking.run())
    await one.engine.paused.wait()
    async with client_for(two.app) as other_instance:
        other_instance.cookies = client.cookies
        stopped = await other_instance.post("/stop_generation", json={})  # the active one's
        assert stopped.status_code == 200
        assert stopped.json()["message_id"] == asking_id(asking)
        await asyncio.wait_for(one.ended.wait(), 2)  # within a second or so
        await running
        nothing = await other_instance.post("/stop_generation", json={})
        assert (nothing.status_code, nothing.json()["error"]["code"]) == (409, "nothing_running")
    assert one.outcomes == ["client_disconnected_while_streaming"]
    assert parse_events(asking.text)[-1].data["finish_reason"] == "cancelled"
    stored = (await client.get("/get_prompt")).json()["messages"][-1]
    assert (stored["content"], stored["finish_reason"]) == ("One two", "cancelled")
    load = await one.chat_stream.admission_for(None).load()
    assert (load.processing, load.waiting) == (0, 0)
    one.engine.pause_after = None
    assert (await client.post("/chat_stream", json={"user_input": "again"})).status_code == 200
    await client.aclose()


async def test_a_reply_nobody_follows_stops_after_the_detach_grace(redis: Redis) -> None:
    instance = Instance(redis, detach_grace=0.3)
    client, cookie = await session_of(instance.app)
    instance.engine.pause_after = 1
    asking = ManualRequest(instance.app, "/chat", {"user_input": "hi"}, cookie, SSE)
    running = asyncio.create_task(asking.run())
    await instance.engine.paused.wait()
    asking.leave.set()
    await running
    await asyncio.sleep(0.1)
    assert not instance.ended.is_set()  # still within its grace
    await asyncio.wait_for(instance.ended.wait(), 3)
    assert instance.outcomes == ["client_disconnected_while_streaming"]
    stored = (await client.get("/get_prompt")).json()["messages"][-1]
    assert (stored["content"], stored["finish_reason"]) == ("One", "cancelled")
    await instance.chat_stream.aclose()
    await client.aclose()


async def test_a_retried_post_follows_the_reply_it_started(one: Instance) -> None:
    client, cookie = await session_of(one.app)
    key = {"idempotency-key": "3f2c-retry-me"}
    one.engine.pause_after = 2
    first = ManualRequest(one.app, "/chat", {"user_input": "once"}, cookie, SSE, headers=key)
    running = asyncio.create_task(first.run())
    await one.engine.paused.wait()
    first.leave.set()  # the network drops; the client posts again, the same request
    await running
    retry = ManualRequest(one.app, "/chat", {"user_input": "once"}, cookie, SSE, headers=key)
    retrying = asyncio.create_task(retry.run())
    one.engine.resume.set()
    await retrying
    assert ids_and_text(retry) == ([1, 2, 3, 4, 5, 6], "".join(DELTAS))
    said = [m["content"] for m in (await client.get("/get_prompt")).json()["messages"]]
    assert said == ["once", "".join(DELTAS)]  # its user message is stored once
    assert len(one.engine.requests) == 1
    too_long = await client.post(
        "/chat_stream", json={"user_input": "x"}, headers={"idempotency-key": "k" * 129}
    )
    assert too_long.status_code == 422
    await client.aclose()


async def test_a_queued_reply_reports_its_position_and_an_estimated_wait(redis: Redis) -> None:
    instance = Instance(redis, max_concurrent=1)
    async with client_for(instance.app) as warm:
        await warm.post("/chat_stream", json={"user_input": "warm-up"})  # a service time
    holder, holder_cookie = await session_of(instance.app)
    instance.engine.pause_after = 0
    holding = ManualRequest(instance.app, "/chat", {"user_input": "a"}, holder_cookie, SSE)
    held = asyncio.create_task(holding.run())
    await instance.engine.paused.wait()
    waiter, waiter_cookie = await session_of(instance.app)
    waiting = ManualRequest(instance.app, "/chat_stream", {"user_input": "b"}, waiter_cookie, SSE)
    queued = asyncio.create_task(waiting.run())
    await wait_until(lambda: asyncio.sleep(0, waiting.text), lambda text: "queued" in text)
    instance.engine.resume.set()
    await asyncio.gather(held, queued)
    first = parse_events(waiting.text)[0]
    assert first.name == "queued" and first.id is None
    assert first.data["position"] == 1 and first.data["eta_s"] >= 0
    await instance.chat_stream.aclose()
    for client in (holder, waiter):
        await client.aclose()


async def test_a_reply_whose_record_cannot_be_written_still_streams_and_is_stored(
    one: Instance, two: Instance, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis refusing the reply's record (not the conversation): the asking client gets the
    whole reply and it is stored; a follower on another instance, whose record says "running"
    but hears nothing more, ends with the stored reply instead of waiting for ever."""
    store = one.chat_stream.reply_store(None)

    async def refused(*args: Any, **kwargs: Any) -> Any:
        raise ServiceUnavailable("the reply store is unavailable; try again shortly")

    monkeypatch.setattr(store, "record", refused)
    monkeypatch.setattr(follow, "SILENCE_LIMIT", 0.3)
    client, cookie = await session_of(one.app)
    reply = await client.post("/chat_stream", json={"user_input": "hi"}, headers={"accept": SSE})
    events = parse_events(reply.text)
    assert (reply_text(events), events[-1].name) == ("".join(DELTAS), "done")
    assert "could not record the end of reply" in caplog.text
    message_id = events[-1].data["message_id"]
    stored = (await client.get("/get_prompt")).json()["messages"]
    assert [(m["content"], m["finish_reason"]) for m in stored[1:]] == [("".join(DELTAS), "stop")]
    async with client_for(two.app) as elsewhere:  # its record never got past "queued"
        elsewhere.headers["cookie"] = cookie
        followed = await elsewhere.get(f"/chat_stream/{message_id}", headers={"accept": SSE})
        assert reply_text(parse_events(followed.text)) == "".join(DELTAS)
    await client.aclose()


async def test_a_reply_whose_instance_went_silent_ends_with_an_error_elsewhere(
    one: Instance, two: Instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The generating instance dead mid-reply (its record stops, nothing was stored): a
    follower elsewhere gets what was recorded, then an error, not a wait until the TTL."""
    monkeypatch.setattr(follow, "SILENCE_LIMIT", 0.3)
    client, cookie = await session_of(one.app)
    one.engine.pause_after = 2
    asking = ManualRequest(one.app, "/chat", {"user_input": "hi"}, cookie, SSE)
    running = asyncio.create_task(asking.run())
    await one.engine.paused.wait()
    message_id = (await client.get("/get_prompt")).json()["messages"][-1]["message_id"]
    reply = one.chat_stream.replies.get(message_id)
    assert reply is not None and reply._recorder is not None
    store = one.chat_stream.reply_store(None)
    await wait_until(lambda: store.events(message_id, 0), lambda events: len(events) == 2)
    await reply._recorder.stop()  # as if its instance died: no more records
    async with client_for(two.app) as elsewhere:
        elsewhere.headers["cookie"] = cookie
        followed = await elsewhere.get(f"/chat_stream/{message_id}", headers={"accept": SSE})
    events = parse_events(followed.text)
    assert reply_text(events) == "One two"
    assert events[-1].name == "error", events[-1]
    assert events[-1].data["code"] == "generation_failed"
    one.engine.resume.set()
    await running
    await client.aclose()


async def test_many_replies_at_once_record_at_a_pace_the_instance_can_afford(
    one: Instance,
) -> None:
    """Each running reply knows how many run here: its records stretch so that together they
    stay within RECORDS_PER_SECOND, and shrink back as replies end."""
    one.engine.pause_after = 1
    sessions = [await session_of(one.app) for _ in range(3)]
    asking = [ManualRequest(one.app, "/chat", {"user_input": "hi"}, c, SSE) for _, c in sessions]
    tasks = [asyncio.create_task(request.run()) for request in asking]
    await wait_until(
        lambda: asyncio.sleep(0, one.engine.running), lambda running: running == len(asking)
    )
    replies = list(one.chat_stream.replies._running.values())
    assert [reply.running_here for reply in replies] == [3, 3, 3]
    one.engine.resume.set()
    await asyncio.gather(*tasks)
    assert one.chat_stream.replies._running == {}
    assert 16 / running.RECORDS_PER_SECOND > running.FLUSH_INTERVAL  # 16 replies: stretched
    for client, _ in sessions:
        await client.aclose()
