"""The OpenAI-compatible API, driven by the official ``openai`` client."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator
from typing import Any, cast

import openai
import pytest
from fastapi import FastAPI

from chatstream.app import create_app
from chatstream.cli import build_parser
from chatstream.config import key_digest
from chatstream.settings import Settings

from ..asgi import ManualRequest
from ..conftest import AppFactory, client_for
from ..scripted import ScriptedEngine
from ..test_chat_stream import wait_until

FIRST_KEY = "sk-first-0123456789abcdef0123456789"
SECOND_KEY = "sk-second-0123456789abcdef012345678"
JSON = {"content-type": "application/json"}
HI: list[Any] = [{"role": "user", "content": "Hi"}]
TOOL = {"type": "function", "function": {"name": "f"}}


@contextlib.asynccontextmanager
async def openai_client(app: FastAPI, api_key: str = "unused") -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url="http://127.0.0.1/v1",
        api_key=api_key,
        # openai >= 3 types this as httpx2's client, and takes httpx's too.
        http_client=cast(Any, client_for(app)),
        max_retries=0,
    ) as client:
        yield client


async def collect(stream: openai.AsyncStream[Any]) -> list[Any]:
    return [chunk async for chunk in stream]


def content_of(chunks: list[Any]) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


async def test_a_completion_answers_the_whole_conversation(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    app, _ = make_app(engine)
    async with openai_client(app) as client:
        completion = await client.chat.completions.create(
            model="any-name",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "And"}, {"type": "text", "text": "now?"}],
                },
            ],
            top_p=0.5,
        )
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "any-name"
    choice = completion.choices[0]
    assert (choice.index, choice.message.role) == (0, "assistant")
    assert (choice.message.content, choice.finish_reason) == ("Hello world", "stop")
    assert completion.usage is not None
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 2, 5)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    request = engine.requests[-1]
    assert request.request_id == completion.id
    assert [(m["role"], m["content"]) for m in request.messages] == [
        ("system", "Be brief."),
        ("user", "Hi"),
        ("assistant", "Hello"),
        ("user", "And\nnow?"),
    ]
    assert request.prompt.endswith("user: And\nnow?\nassistant:")
    assert (request.params.top_p, request.params.temperature) == (0.5, 0.7)  # 0.7: the default


async def test_nothing_is_stored_and_no_session_starts(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    app, _ = make_app(engine, system_prompt="Be kind.")
    async with client_for(app) as http:
        response = await http.post("/v1/chat/completions", json={"messages": HI})
        assert response.status_code == 200
        assert "set-cookie" not in response.headers
        assert (await http.get("/get_prompt")).json()["messages"] == []
    # Without a system message of its own, the request gets the chat's.
    assert [m["role"] for m in engine.requests[-1].messages] == ["system", "user"]
    assert engine.requests[-1].messages[0]["content"] == "Be kind."


async def test_a_stream_sends_the_role_the_content_and_the_finish(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    app, _ = make_app(engine)
    async with openai_client(app) as client:
        chunks = await collect(
            await client.chat.completions.create(model="m", messages=HI, stream=True)
        )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert content_of(chunks) == "Hello world"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    assert all(chunk.usage is None for chunk in chunks)


async def test_a_stream_with_include_usage_ends_with_the_usage(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    app, _ = make_app(engine)
    async with openai_client(app) as client:
        chunks = await collect(
            await client.chat.completions.create(
                model="m", messages=HI, stream=True, stream_options={"include_usage": True}
            )
        )
    assert content_of(chunks) == "Hello world"
    assert chunks[-2].choices[0].finish_reason == "stop"
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (3, 2)
    assert last.usage.total_tokens == 5


async def test_stop_and_sampling_reach_the_engine(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    app, _ = make_app(engine, stop=("</s>",))
    async with openai_client(app) as client:
        await client.chat.completions.create(
            model="m", messages=HI, stop=["END", "###"], temperature=0.0, max_tokens=7
        )
        await client.chat.completions.create(
            model="m", messages=HI, stop="END", max_completion_tokens=9
        )
    first, second = (request.params for request in engine.requests)
    # The chat's and the request's: the engine adds the model's end of turn (<|end|>) itself.
    assert first.stop == ("</s>", "END", "###")
    assert (first.temperature, first.max_new_tokens) == (0.0, 7)
    assert (second.stop, second.max_new_tokens) == (("</s>", "END"), 9)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_reply_cut_by_max_tokens_finishes_with_length(
    make_app: AppFactory, stream: bool
) -> None:
    app, _ = make_app(ScriptedEngine(finish_reason="length"))
    async with openai_client(app) as client:
        if stream:
            chunks = await collect(
                await client.chat.completions.create(
                    model="m", messages=HI, max_tokens=2, stream=True
                )
            )
            finish_reason = chunks[-1].choices[0].finish_reason
        else:
            completion = await client.chat.completions.create(model="m", messages=HI, max_tokens=2)
            finish_reason = completion.choices[0].finish_reason
    assert finish_reason == "length"


async def test_the_model_list(make_app: AppFactory, engine: ScriptedEngine) -> None:
    app, _ = make_app(engine)
    async with openai_client(app) as client:
        models = [model async for model in client.models.list()]
    assert [(m.id, m.object, m.owned_by) for m in models] == [("scripted", "model", "chatstream")]
    assert models[0].created > 0


async def test_api_keys_are_required_when_set(
    make_app: AppFactory, engine: ScriptedEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[bytes] = []
    compare_digest = hmac.compare_digest

    def spy(given: bytes, key: bytes) -> bool:
        compared.append(key)
        return compare_digest(given, key)

    monkeypatch.setattr("chatstream.http.guard.hmac.compare_digest", spy)
    app, _ = make_app(engine, api_keys=[FIRST_KEY, SECOND_KEY])
    async with openai_client(app, api_key=FIRST_KEY) as client:
        completion = await client.chat.completions.create(model="m", messages=HI)
        assert completion.choices[0].message.content == "Hello world"
        assert [m.id async for m in client.models.list()] == ["scripted"]
    # Every key's digest is compared, even after the first matched: the timing reveals nothing.
    assert compared == [key_digest(FIRST_KEY), key_digest(SECOND_KEY)] * 2
    async with openai_client(app, api_key=SECOND_KEY) as client:
        await client.chat.completions.create(model="m", messages=HI)
    for wrong in ("wrong-key", FIRST_KEY + "-and-more", FIRST_KEY[:-1]):
        async with openai_client(app, api_key=wrong) as client:
            with pytest.raises(openai.AuthenticationError) as refused:
                await client.chat.completions.create(model="m", messages=HI)
            assert refused.value.status_code == 401
            with pytest.raises(openai.AuthenticationError):
                await client.models.list()
    async with client_for(app) as http:
        for headers in ({}, {"authorization": f"Basic {FIRST_KEY}"}):
            response = await http.post(
                "/v1/chat/completions", json={"messages": HI}, headers=headers
            )
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["code"] == "unauthorized"
        assert (await http.get("/v1/models")).status_code == 401
        assert (await http.post("/chat_stream", json={"user_input": "hi"})).status_code == 200
    assert len(engine.requests) == 3  # no refused request reached the engine


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": []},
        {"messages": "Hi"},
        {"messages": [{"role": "robot", "content": "Hi"}]},
        {"messages": [{"role": "user"}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        {"messages": HI, "n": 2},
        {"messages": HI, "temperature": 2.5},
        {"messages": HI, "temperature": "0.5"},
        {"messages": HI, "top_p": 0},
        {"messages": HI, "max_tokens": 0},
        {"messages": HI, "stream": "yes"},
        {"messages": HI, "stop": ["a", "b", "c", "d", "e"]},
        {"messages": HI, "stop": ""},
        [HI],
    ],
)
async def test_invalid_requests_are_422(
    make_app: AppFactory, engine: ScriptedEngine, body: Any
) -> None:
    app, _ = make_app(engine)
    async with client_for(app) as http:
        response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    assert engine.requests == []


async def test_the_client_sees_422_400_and_413(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    app, _ = make_app(engine, context_len=20, max_new_tokens=10)
    async with openai_client(app) as client:
        with pytest.raises(openai.UnprocessableEntityError) as bad_n:
            await client.chat.completions.create(model="m", messages=HI, n=2)
        assert bad_n.value.body == {"code": "invalid_request", "message": "n: Input should be 1"}
        with pytest.raises(openai.UnprocessableEntityError):
            await client.chat.completions.create(model="m", messages=HI, temperature=3.0)
        too_long: list[Any] = [{"role": "user", "content": "word " * 30}]
        with pytest.raises(openai.APIStatusError) as refused:
            await client.chat.completions.create(model="m", messages=too_long)
        assert refused.value.status_code == 413
    async with client_for(app) as http:
        response = await http.post("/v1/chat/completions", content=b"{not json", headers=JSON)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_json"
        unknown = {"messages": HI, "user": "u", "metadata": {"k": "v"}, "presence_penalty": 0}
        assert (await http.post("/v1/chat/completions", json=unknown)).status_code == 200


async def test_it_waits_in_the_chat_routes_queue(make_app: AppFactory) -> None:
    engine = ScriptedEngine(pause_after=0, slots=1)
    app, chat_stream = make_app(engine, max_concurrent=1, max_queue=1, queue_timeout=0.5)
    holder = ManualRequest(app, "/chat_stream", {"user_input": "holding"})
    holding = asyncio.create_task(holder.run())
    await engine.paused.wait()
    async with openai_client(app) as waiting_client, openai_client(app) as refused_client:
        waiting = asyncio.create_task(
            waiting_client.chat.completions.create(model="m", messages=HI)
        )
        admission = chat_stream.admission_for(None)
        await wait_until(admission.load, lambda load: load.waiting == 1)
        with pytest.raises(openai.RateLimitError) as refused:
            await refused_client.chat.completions.create(model="m", messages=HI, stream=True)
        assert isinstance(refused.value.body, dict)
        assert refused.value.body["code"] == "queue_full"
        assert int(refused.value.response.headers["retry-after"]) >= 1
        with pytest.raises(openai.InternalServerError) as timed_out:
            await waiting
        assert timed_out.value.status_code == 503
        assert isinstance(timed_out.value.body, dict)
        assert timed_out.value.body["code"] == "queue_timeout"
    engine.resume.set()
    await holding
    assert holder.text == "Hello world"
    assert len(engine.requests) == 1
    load = await admission.load()
    assert (load.processing, load.waiting) == (0, 0)


async def test_a_client_leaving_mid_stream_stops_the_engine(make_app: AppFactory) -> None:
    engine = ScriptedEngine(["Par", "tial", " never"], pause_after=2)
    app, chat_stream = make_app(engine)
    payload = {"messages": HI, "stream": True}
    leaving = ManualRequest(app, "/v1/chat/completions", payload, accept="text/event-stream")
    running = asyncio.create_task(leaving.run())
    await engine.paused.wait()
    assert '"content":"tial"' in leaving.text
    leaving.leave.set()
    await running
    assert engine.cancelled.is_set()
    assert engine.running == 0
    assert (await chat_stream.admission_for(None).load()).processing == 0
    metrics = chat_stream.metrics.render().decode()
    assert 'chatstream_outcomes_total{outcome="client_disconnected_while_streaming"} 1.0' in metrics


async def test_a_client_leaving_while_queued_gives_up_its_place(make_app: AppFactory) -> None:
    engine = ScriptedEngine(pause_after=0, slots=1)
    app, chat_stream = make_app(engine, max_concurrent=1)
    holder = ManualRequest(app, "/v1/chat/completions", {"messages": HI})
    holding = asyncio.create_task(holder.run())
    await engine.paused.wait()
    waiter = ManualRequest(app, "/v1/chat/completions", {"messages": HI, "stream": True})
    waiting = asyncio.create_task(waiter.run())
    admission = chat_stream.admission_for(None)
    await wait_until(admission.load, lambda load: load.waiting == 1)
    waiter.leave.set()
    await waiting
    assert waiter.status is None
    assert (await admission.load()).waiting == 0
    engine.resume.set()
    await holding
    assert holder.status == 200
    assert '"content":"Hello world"' in holder.text
    assert len(engine.requests) == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_an_engine_failure_is_an_error(make_app: AppFactory, stream: bool) -> None:
    app, _ = make_app(ScriptedEngine(["ok", " then", " boom"], fail_after=2))
    async with openai_client(app) as client:
        with pytest.raises(openai.APIError) as failed:
            if stream:
                await collect(
                    await client.chat.completions.create(model="m", messages=HI, stream=True)
                )
            else:
                await client.chat.completions.create(model="m", messages=HI)
    assert isinstance(failed.value.body, dict)
    assert failed.value.body["code"] == "generation_failed"


async def test_metrics_count_completions_like_chat_turns(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    app, _ = make_app(engine)
    async with openai_client(app) as client:
        await client.chat.completions.create(model="m", messages=HI)
        await collect(await client.chat.completions.create(model="m", messages=HI, stream=True))
    async with client_for(app) as http:
        text = (await http.get("/metrics")).text
    assert 'chatstream_outcomes_total{outcome="success"} 2.0' in text
    assert "chatstream_tokens_generated_total 4.0" in text
    assert "chatstream_time_to_first_token_seconds_count 2.0" in text
    assert "chatstream_queue_wait_seconds_count 2.0" in text
    assert "chatstream_generations_active 0.0" in text


async def test_the_served_app_with_the_mock_engine() -> None:
    settings = Settings(model="mock", mock_token_delay=0.0, secret_key="k", api_keys=FIRST_KEY)
    app = create_app(settings)
    async with openai_client(app, api_key=FIRST_KEY) as client:
        completion = await client.chat.completions.create(
            model="mock", messages=[{"role": "user", "content": "Paris is lovely"}]
        )
        assert completion.choices[0].message.content is not None
        assert completion.choices[0].message.content.startswith("Paris is lovely This is")
        assert completion.choices[0].finish_reason == "stop"
        chunks = await collect(
            await client.chat.completions.create(
                model="mock",
                messages=[{"role": "user", "content": "Paris is lovely"}],
                max_tokens=3,
                stream=True,
            )
        )
        assert content_of(chunks) == "Paris is lovely"
        assert chunks[-1].choices[0].finish_reason == "length"
        stopped = await client.chat.completions.create(
            model="mock", messages=[{"role": "user", "content": "one two three"}], stop=" three"
        )
        assert stopped.choices[0].message.content == "one two"
        assert stopped.choices[0].finish_reason == "stop"
        assert [m.id async for m in client.models.list()] == ["mock"]
    async with openai_client(app, api_key="wrong") as client:
        with pytest.raises(openai.AuthenticationError):
            await client.models.list()


def test_api_keys_come_from_the_environment_and_the_cli(
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = Settings.from_env({"CHATSTREAM_API_KEYS": f"{FIRST_KEY}, {SECOND_KEY} ,"})
    assert keys.api_key_list == [FIRST_KEY, SECOND_KEY]
    assert Settings.from_env({}).api_key_list == []
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    help_text = capsys.readouterr().out
    assert "--api-keys" in help_text
    assert "CHATSTREAM_API_KEYS" in help_text


async def test_short_api_keys_are_refused(make_app: AppFactory, engine: ScriptedEngine) -> None:
    for short in ("", "x" * 31):
        with pytest.raises(ValueError, match="at least 32 characters"):
            make_app(engine, api_keys=[FIRST_KEY, short])


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        (
            {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "auto"},
            "tools",
        ),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": 1}, "frequency_penalty"),
        ({"seed": 7}, "seed"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"modalities": ["text", "audio"]}, "modalities"),
    ],
)
async def test_parameters_that_change_the_answer_and_are_not_implemented_are_refused(
    make_app: AppFactory, engine: ScriptedEngine, parameters: dict[str, Any], named: str
) -> None:
    """Clients that asked for tool calls or JSON get a clear 422, never a plain-text answer."""
    app, _ = make_app(engine)
    async with client_for(app) as http:
        response = await http.post("/v1/chat/completions", json={"messages": HI, **parameters})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert named in error["message"] and "not supported" in error["message"]
    assert engine.requests == []


async def test_their_defaults_are_accepted(make_app: AppFactory, engine: ScriptedEngine) -> None:
    app, _ = make_app(engine)
    defaults = {
        "tools": [TOOL],
        "tool_choice": "none",
        "response_format": {"type": "text"},
        "logprobs": False,
        "presence_penalty": 0,
        "frequency_penalty": 0.0,
        "seed": None,
        "modalities": ["text"],
        "logit_bias": {},
    }
    async with openai_client(app) as client:
        completion = await client.chat.completions.create(
            model="m", messages=HI, extra_body=defaults
        )
    assert completion.choices[0].message.content == "Hello world"


async def test_a_developer_message_is_a_system_message(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    app, _ = make_app(engine)
    async with openai_client(app) as client:
        await client.chat.completions.create(
            model="m", messages=[{"role": "developer", "content": "Be brief."}, *HI]
        )
    assert engine.requests[0].messages[0] == {"role": "system", "content": "Be brief."}


async def test_bounds_on_stop_strings_and_the_echoed_model(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    app, _ = make_app(engine)
    async with client_for(app) as http:
        for body in (
            {"stop": ["a"] * 5},
            {"stop": "x" * 65},
            {"stop": ["ok", "x" * 65]},
            {"model": "m" * 257},
        ):
            response = await http.post("/v1/chat/completions", json={"messages": HI, **body})
            assert response.status_code == 422, body
        fine = {"messages": HI, "stop": ["x" * 64] * 4, "model": "m" * 256}
        answer = await http.post("/v1/chat/completions", json=fine)
        assert (answer.status_code, answer.json()["model"]) == (200, "m" * 256)


async def test_one_model_and_unknown_routes_answer_in_the_error_shape(
    make_app: AppFactory, engine: ScriptedEngine
) -> None:
    app, _ = make_app(engine)
    async with openai_client(app) as client:
        model = await client.models.retrieve("scripted")
        assert (model.id, model.object) == ("scripted", "model")
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("gpt-4o")
    async with client_for(app) as http:
        for method, path, status in [
            ("GET", "/v1/embeddings", 404),
            ("POST", "/v1/completions", 404),
            ("GET", "/v1/chat/completions", 405),
            ("DELETE", "/v1/models", 405),
        ]:
            response = await http.request(method, path)
            assert response.status_code == status, path
            assert response.json()["error"]["code"] in ("not_found", "method_not_allowed")
