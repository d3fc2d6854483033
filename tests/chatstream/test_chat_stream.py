from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from chatstream import ChatStream, Outcome
from chatstream.keys import SemaphoreKeys

from ..sse import parse_events
from .asgi import ManualRequest
from .conftest import AppFactory, client_for
from .scripted import ScriptedEngine

T = TypeVar("T")
JSON = {"content-type": "application/json"}


async def turn(client: httpx.AsyncClient, **payload: Any) -> httpx.Response:
    return await client.post("/chat_stream", json=payload)


async def history(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/get_prompt")
    assert response.status_code == 200
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


async def wait_until(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool]) -> T:
    """Poll ``probe`` until ``done`` says yes: for state in Redis, which has no event to await."""
    async with asyncio.timeout(5):
        while not done(value := await probe()):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    return value


def cookie_header(client: httpx.AsyncClient) -> str:
    return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


class Recorder:
    """A completion callback that records its calls and what the session held at that time."""

    def __init__(self) -> None:
        self.calls: list[tuple[Outcome, list[dict[str, Any]]]] = []
        self.called = asyncio.Event()

    async def __call__(self, request: Request, message: Outcome) -> None:
        prompt = request.state.session.get_session().get("chat_prompt")
        stored = [m.to_dict() for m in prompt.messages] if prompt is not None else []
        self.calls.append((message, stored))
        self.called.set()


def app_with_callback(
    make_app: AppFactory, engine: ScriptedEngine, callback: Any, **options: Any
) -> FastAPI:
    app, chat_stream = make_app(engine, **options)

    @app.post("/with_callback")
    async def with_callback(request: Request) -> Response:
        return await chat_stream.handle_chat_stream_request(request, callback=callback)

    return app


async def test_a_turn_streams_the_reply_and_stores_it(chat: httpx.AsyncClient) -> None:
    response = await turn(chat, user_input="Hi there")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == "Hello world"
    message_id = response.headers["x-message-id"]
    stored = await history(chat)
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "Hi there"),
        ("assistant", "Hello world"),
    ]
    assert stored[1]["message_id"] == message_id
    assert stored[1]["finish_reason"] == "stop"
    assert stored[1]["completion_tokens"] == 2


async def test_the_next_turn_sees_the_history(
    chat: httpx.AsyncClient, engine: ScriptedEngine
) -> None:
    await turn(chat, user_input="first")
    await turn(chat, user_input="second")
    assert [m["content"] for m in engine.requests[1].messages] == ["first", "Hello world", "second"]
    assert engine.requests[1].prompt.endswith("user: second\nassistant:")
    assert engine.requests[1].params.stop == ()  # the engine applies its own end of turn
    prompt = (await chat.get("/get_prompt")).json()["prompt"]
    assert (
        prompt
        == "user: first\nassistant: Hello world\nuser: second\nassistant: Hello world\nassistant:"
    )


async def test_sessions_are_isolated(make_app: AppFactory, engine: ScriptedEngine) -> None:
    app, _ = make_app(engine)
    async with client_for(app) as alice, client_for(app) as bob:
        await turn(alice, user_input="from alice")
        assert await history(bob) == []
        await turn(bob, user_input="from bob")
        assert [m["content"] for m in await history(alice)] == ["from alice", "Hello world"]


async def test_regenerate_replaces_the_last_reply(
    chat: httpx.AsyncClient, engine: ScriptedEngine
) -> None:
    first = await turn(chat, user_input="question")
    engine.deltas = ["Another", " answer"]
    again = await turn(chat, regenerate=True, user_input="ignored")
    assert again.status_code == 200
    assert again.text == "Another answer"
    assert again.headers["x-message-id"] != first.headers["x-message-id"]
    stored = await history(chat)
    assert [m["content"] for m in stored] == ["question", "Another answer"]
    assert stored[1]["message_id"] == again.headers["x-message-id"]
    assert [m["content"] for m in engine.requests[1].messages] == ["question"]


async def test_regenerate_with_nothing_to_regenerate_is_409(chat: httpx.AsyncClient) -> None:
    response = await turn(chat, regenerate=True)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "nothing_to_regenerate"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"\xff\xfe", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b"[1, 2]", 422, "invalid_request"),
        (b'"text"', 422, "invalid_request"),
        (b"{}", 422, "invalid_request"),
        (b'{"user_input": ""}', 422, "invalid_request"),
        (b'{"user_input": "   "}', 422, "invalid_request"),
        (b'{"user_input": 5}', 422, "invalid_request"),
        (b'{"user_input": null}', 422, "invalid_request"),
        (b'{"user_input": ["a"]}', 422, "invalid_request"),
        (b'{"user_input": "hi", "regenerate": "true"}', 422, "invalid_request"),
        (b'{"user_input": "hi", "regenerate": 1}', 422, "invalid_request"),
        (b'{"regenerate": true, "user_input": 3}', 422, "invalid_request"),
    ],
)
async def test_bad_bodies_get_clear_errors(
    chat: httpx.AsyncClient, body: bytes, status: int, code: str
) -> None:
    await turn(chat, user_input="kept")
    response = await chat.post("/chat_stream", content=body, headers=JSON)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert [m["content"] for m in await history(chat)] == ["kept", "Hello world"]


async def test_unknown_fields_are_ignored(chat: httpx.AsyncClient) -> None:
    response = await turn(chat, user_input="hi", extra={"x": 1}, temperature="hot")
    assert response.status_code == 200


async def test_too_long_input_and_body_are_413(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    app, _ = make_app(engine, max_input_chars=10, max_body_bytes=100)
    async with client_for(app) as client:
        too_long = await turn(client, user_input="x" * 11)
        assert too_long.status_code == 413
        assert too_long.json()["error"]["code"] == "input_too_long"
        too_big = await client.post(
            "/chat_stream", content=b'{"user_input": "' + b"y" * 200 + b'"}', headers=JSON
        )
        assert too_big.status_code == 413
        assert (await turn(client, user_input="x" * 10)).status_code == 200


async def test_a_message_that_cannot_fit_the_context_is_413(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    app, _ = make_app(engine, context_len=20, max_new_tokens=10)
    async with client_for(app) as client:
        response = await turn(client, user_input=" ".join(["word"] * 30))
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "input_too_long"


async def test_old_turns_are_dropped_to_fit_the_context(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    app, _ = make_app(engine, context_len=24, max_new_tokens=8, system_prompt="Be brief.")
    async with client_for(app) as client:
        for index in range(4):
            assert (await turn(client, user_input=f"question {index}")).status_code == 200
        seen = [m["content"] for m in engine.requests[-1].messages]
        assert seen[0] == "Be brief."
        assert seen[-1] == "question 3"
        assert "question 0" not in seen
        assert len(await history(client)) == 8  # the stored history keeps every turn


async def test_session_busy_and_lease_released(make_app: AppFactory, redis: Any) -> None:
    engine = ScriptedEngine()
    app, _ = make_app(engine)
    async with client_for(app) as client:
        await turn(client, user_input="first")
        engine.pause_after = 1
        first = ManualRequest(
            app, "/chat_stream", {"user_input": "slow"}, cookie=cookie_header(client)
        )
        running = asyncio.create_task(first.run())
        await engine.paused.wait()
        busy = await turn(client, user_input="meanwhile")
        assert busy.status_code == 409
        assert busy.json()["error"]["code"] == "session_busy"
        cleared = await client.post("/clear_context")
        assert cleared.status_code == 409
        engine.resume.set()
        await running
        assert first.text == "Hello world"
        engine.pause_after = None
        assert (await turn(client, user_input="after")).status_code == 200
        assert [m["content"] for m in await history(client)][-2:] == ["after", "Hello world"]


async def test_callback_runs_once_after_the_turn_is_stored(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    recorder = Recorder()
    app = app_with_callback(make_app, engine, recorder)
    async with client_for(app) as client:
        response = await client.post("/with_callback", json={"user_input": "hi"})
        assert response.text == "Hello world"
        await recorder.called.wait()
    assert len(recorder.calls) == 1
    outcome, stored = recorder.calls[0]
    assert outcome == "success"
    assert [m["content"] for m in stored] == ["hi", "Hello world"]


async def test_a_plain_function_callback_and_a_raising_one(
    make_app: AppFactory, engine: ScriptedEngine, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def plain(request: Request, message: Outcome) -> None:
        seen.append(message)
        raise RuntimeError("callback bug")

    app = app_with_callback(make_app, engine, plain)
    async with client_for(app) as client:
        first = await client.post("/with_callback", json={"user_input": "hi"})
        second = await client.post("/with_callback", json={"user_input": "again"})
    assert first.text == second.text == "Hello world"
    assert seen == ["success", "success"]
    assert "callback bug" in caplog.text


async def test_rejections_reach_the_callback(make_app: AppFactory, engine: ScriptedEngine) -> None:
    recorder = Recorder()
    app = app_with_callback(make_app, engine, recorder)
    async with client_for(app) as client:
        response = await client.post("/with_callback", json={"regenerate": True})
        assert response.status_code == 409
        await recorder.called.wait()
    assert [outcome for outcome, _ in recorder.calls] == ["rejected"]


async def test_client_leaving_mid_stream_cancels_and_keeps_the_partial_reply(
    make_app: AppFactory,
) -> None:
    """With no detach grace, the client leaving stops the reply at once (the seed's way)."""
    engine = ScriptedEngine(["Par", "tial", " never"])
    recorder = Recorder()
    app = app_with_callback(make_app, engine, recorder, detach_grace=0)
    async with client_for(app) as client:
        await turn(client, user_input="warm-up")  # a stored session to continue
        engine.pause_after = 2
        leaving = ManualRequest(
            app, "/with_callback", {"user_input": "go"}, cookie=cookie_header(client)
        )
        running = asyncio.create_task(leaving.run())
        await engine.paused.wait()
        leaving.leave.set()
        await running
        await recorder.called.wait()  # the reply ends on its own, once stored
        assert engine.cancelled.is_set()
        assert leaving.text == "Partial"
        assert recorder.calls[-1][0] == "client_disconnected_while_streaming"
        reply = (await history(client))[-1]
        assert (reply["content"], reply["finish_reason"]) == ("Partial", "cancelled")
        engine.pause_after = None
        engine.deltas = ["Fresh"]
        regenerated = await turn(client, regenerate=True)
        assert regenerated.text == "Fresh"
        assert [m["content"] for m in await history(client)][-2:] == ["go", "Fresh"]
    assert len(recorder.calls) == 1


async def test_client_leaving_while_queued(make_app: AppFactory) -> None:
    engine = ScriptedEngine(pause_after=0, slots=1)
    recorder = Recorder()
    app, chat_stream = make_app(engine, max_concurrent=1, detach_grace=0)

    @app.post("/with_callback")
    async def with_callback(request: Request) -> Response:
        return await chat_stream.handle_chat_stream_request(request, callback=recorder)

    holder = ManualRequest(app, "/chat_stream", {"user_input": "holding"})
    holding = asyncio.create_task(holder.run())
    await engine.paused.wait()
    waiter = ManualRequest(app, "/with_callback", {"user_input": "waiting"})
    waiting = asyncio.create_task(waiter.run())
    admission = chat_stream._admission
    assert admission is not None
    await wait_until(lambda: admission.load(), lambda load: load.waiting == 1)
    waiter.leave.set()
    await waiting
    await recorder.called.wait()
    assert recorder.calls[0][0] == "client_disconnected_before_streaming"
    assert recorder.calls[0][1] == []
    assert waiter.status is None
    assert (await admission.load()).waiting == 0
    engine.resume.set()
    await holding
    assert holder.text == "Hello world"
    assert len(engine.requests) == 1
    assert (await admission.load()).processing == 0


async def test_queue_full_and_queue_timeout(make_app: AppFactory) -> None:
    engine = ScriptedEngine(pause_after=0, slots=1)
    app, chat_stream = make_app(engine, max_concurrent=1, max_queue=1, queue_timeout=0.5)
    holder = ManualRequest(app, "/chat_stream", {"user_input": "holding"})
    holding = asyncio.create_task(holder.run())
    await engine.paused.wait()
    async with client_for(app) as waiting_client, client_for(app) as refused_client:
        waiting = asyncio.create_task(turn(waiting_client, user_input="waits"))
        admission = chat_stream._admission
        assert admission is not None
        await wait_until(lambda: admission.load(), lambda load: load.waiting == 1)
        refused = await turn(refused_client, user_input="refused")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "queue_full"
        assert int(refused.headers["retry-after"]) >= 1
        timed_out = await waiting
        assert timed_out.status_code == 503
        assert timed_out.json()["error"]["code"] == "queue_timeout"
        assert int(timed_out.headers["retry-after"]) >= 1
        assert await history(waiting_client) == []
    engine.resume.set()
    await holding


async def test_engine_failure_is_reported_and_stored(make_app: AppFactory) -> None:
    engine = ScriptedEngine(["ok", " then", " boom"], fail_after=2)
    recorder = Recorder()
    app = app_with_callback(make_app, engine, recorder)
    async with client_for(app) as client:
        response = await client.post("/with_callback", json={"user_input": "hi"})
        assert response.status_code == 200
        assert response.text == "ok then"
        await recorder.called.wait()
        assert recorder.calls[0][0] == "unknown_error_occurred"
        reply = (await history(client))[-1]
        assert (reply["content"], reply["finish_reason"]) == ("ok then", "error")


async def test_a_permit_lost_mid_stream_ends_it_with_an_error_event(
    make_app: AppFactory, redis: Any
) -> None:
    """A failover that loses the permit just taken: its renewal finds it gone."""
    engine = ScriptedEngine(["Half", " never"], pause_after=1)
    recorder = Recorder()
    app = app_with_callback(make_app, engine, recorder, lease_ttl=0.3)
    async with client_for(app) as client:
        sse = {"accept": "text/event-stream"}
        reply = asyncio.create_task(
            client.post("/with_callback", json={"user_input": "hi"}, headers=sse)
        )
        await engine.paused.wait()
        await redis.delete(SemaphoreKeys.build("generation").holders)
        events = [event.name for event in parse_events((await reply).text)]
        assert events == ["delta", "error"]
        assert engine.cancelled.is_set()
        assert recorder.calls[0][0] == "unknown_error_occurred"
        stored = (await history(client))[-1]
        assert (stored["content"], stored["finish_reason"]) == ("Half", "error")


async def test_event_stream(chat: httpx.AsyncClient) -> None:
    response = await chat.post(
        "/chat_stream", json={"user_input": "hi"}, headers={"accept": "text/event-stream"}
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [(event.name, event.data) for event in parse_events(response.text)]
    assert events[:2] == [("delta", {"text": "Hello"}), ("delta", {"text": " world"})]
    name, done = events[2]
    assert name == "done"
    assert done["message_id"] == response.headers["x-message-id"]
    assert done["finish_reason"] == "stop"
    assert done["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "cached_tokens": 0}


async def test_clear_context(chat: httpx.AsyncClient) -> None:
    await turn(chat, user_input="hello")
    response = await chat.post("/clear_context")
    assert response.status_code == 200
    assert await history(chat) == []


async def test_interception_passes_the_body_on(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    app, chat_stream = make_app(engine)

    @app.post("/intercepted")
    async def intercepted(request: Request) -> Response:
        body = await request.body()
        assert json.loads(body)["user_input"] == "read twice"
        return await chat_stream.handle_chat_stream_request(request, body)

    async with client_for(app) as client:
        response = await client.post("/intercepted", json={"user_input": "read twice"})
        assert response.text == "Hello world"


def test_chat_stream_needs_a_model_or_an_engine() -> None:
    with pytest.raises(TypeError):
        ChatStream()
