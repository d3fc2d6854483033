"""The HTTP routes around a ChatStream; each endpoint also works alone in a user's own app."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from sessions import Session

from ..admission.lease import conversation_lease
from ..chat.feedback import FeedbackBody, validate_feedback
from ..chat.outcome import run_callback
from ..chat.params import GenerationSettings
from ..conversations.access import new_message_id
from ..conversations.prompt import ChatPrompt
from ..errors import ChatStreamError, NotFound
from ..keys import GENERATION_PARAMS
from . import conversations, openai, page, replies
from .body import ChatStreamBody, parse_json, read_body
from .chat import chat_stream_endpoint
from .conversations import conversation_view
from .errors import Endpoint, error_response, json_errors
from .guard import Surface, guard_request
from .responses import json_response

if TYPE_CHECKING:
    from ..chat_stream import ChatStream


async def read_json(chat_stream: ChatStream, request: Request) -> object:
    limits = chat_stream.limits
    return parse_json(await read_body(request, limits.max_json_bytes, limits.body_timeout))


@json_errors
async def get_prompt(chat_stream: ChatStream, request: Request) -> Response:
    """The active conversation: ``{"prompt": the text the model would see next,
    "system_prompt", "messages", "conversation_id"}`` (empty before the first turn)."""
    await request.state.session.load()
    access = chat_stream.conversations(request)
    conversation = await access.active(create=False)
    if conversation is None:
        prompt = chat_stream.bind(ChatPrompt(chat_stream.system_prompt))
        return json_response(
            {
                "prompt": "",
                "system_prompt": prompt.system_prompt,
                "messages": [],
                "conversation_id": None,
            }
        )
    view = await conversation_view(chat_stream, access, conversation)
    prompt = chat_stream.bind(conversation.prompt)
    return json_response(
        {
            "prompt": prompt.create_prompt(),
            "system_prompt": prompt.system_prompt,
            "messages": view["messages"],
            "conversation_id": conversation.info.id,
        }
    )


@json_errors
async def clear_context(chat_stream: ChatStream, request: Request) -> Response:
    """Empty the active conversation, its feedback with it; the sampling parameters stay (409
    while it is generating)."""
    await request.state.session.load()
    access = chat_stream.conversations(request)
    conversation = await access.active(create=False)
    if conversation is not None:
        owner = await access.owner(create=False)
        assert owner is not None
        lease = access.store.lease(conversation.info.id)
        ttl = chat_stream.admission_config.lease_ttl
        async with conversation_lease(lease, new_message_id(), ttl):
            current = await access.load(conversation.info.id)
            await access.store.write(owner, current, start=0, messages=[])
    return json_response({"status": "cleared"})


@json_errors
async def set_generation_params(chat_stream: ChatStream, request: Request) -> Response:
    """Change this session's sampling parameters for its next turns; answers the result."""
    changes = GenerationSettings.validate_changes(
        await read_json(chat_stream, request),
        max_new_tokens_limit=chat_stream.limits.max_new_tokens_limit,
    )
    session: Session = request.state.session
    await session.load()
    stored = session.get_session().get(GENERATION_PARAMS)
    session.get_session()[GENERATION_PARAMS] = {**(stored or {}), **changes}
    await session.save_session()
    return json_response(chat_stream.generation_settings(session).model_dump())


@json_errors
async def get_generation_params(chat_stream: ChatStream, request: Request) -> Response:
    """The sampling parameters this session's next turn will use."""
    await request.state.session.load()
    return json_response(chat_stream.generation_settings(request.state.session).model_dump())


@json_errors
async def set_feedback(chat_stream: ChatStream, request: Request) -> Response:
    """Like or dislike a reply of the active conversation (or of ``conversation_id``), with
    free-form data; one entry per reply, the latest wins (404 for an unknown reply)."""
    feedback = validate_feedback(await read_json(chat_stream, request))
    await request.state.session.load()
    access = chat_stream.conversations(request)
    conversation = (
        await access.active(create=False)
        if feedback.conversation_id is None
        else await access.load(feedback.conversation_id)
    )
    message = None if conversation is None else conversation.prompt.find(feedback.message_id)
    if conversation is None or message is None or message.role != "assistant":
        raise NotFound("this conversation has no reply of that id")
    owner = await access.owner(create=False)
    assert owner is not None
    record = feedback.model_dump(exclude={"conversation_id"})
    if not await access.store.set_feedback(
        owner, conversation.info.id, feedback.message_id, record
    ):
        raise NotFound("this conversation has no reply of that id")
    await run_callback(chat_stream.on_feedback, request, record)
    return json_response({"status": "recorded", "message_id": feedback.message_id})


@json_errors
async def get_load(chat_stream: ChatStream, request: Request) -> Response:
    """Cluster-wide generations running and waiting, and the limits."""
    load = await chat_stream.admission_for(request.state.session).load()
    return json_response(dataclasses.asdict(load))


async def metrics(chat_stream: ChatStream, request: Request) -> Response:
    """Prometheus metrics of this instance."""
    return Response(
        chat_stream.metrics.render(),
        media_type=CONTENT_TYPE_LATEST,
        headers={"X-Content-Type-Options": "nosniff"},
    )


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


@json_errors
async def readyz(chat_stream: ChatStream, request: Request) -> Response:
    """Readiness: the model is loaded, the session store answers and Redis takes writes."""
    await chat_stream.check_ready(request.state.session)
    return json_response({"status": "ready", "model": chat_stream.engine.model_name})


Route = Callable[[Request], Awaitable[Response]]
ONE = "/conversations/{conversation_id}"


def build_router(chat_stream: ChatStream) -> APIRouter:
    """Every route, each behind :func:`~chatstream.http.guard.guard_request`."""
    router = APIRouter()

    def bind(endpoint: Endpoint) -> Route:
        async def route(request: Request) -> Response:
            return await endpoint(chat_stream, request)

        route.__doc__ = endpoint.__doc__
        return route

    def guarded(route: Route, surface: Surface) -> Route:
        # Only ``request`` in the signature: FastAPI reads it to find the route's parameters.
        async def checked(request: Request) -> Response:
            try:
                guard_request(chat_stream.access, request, surface)
            except ChatStreamError as exc:
                return error_response(exc)
            return await route(request)

        checked.__doc__ = route.__doc__
        return checked

    bodies: dict[str, type[BaseModel]] = {
        "POST /chat_stream": ChatStreamBody,
        "POST /set_generation_params": GenerationSettings,
        "POST /set_feedback": FeedbackBody,
        "POST /stop_generation": replies.StopBody,
        "POST /conversations": conversations.NewConversation,
        f"PATCH {ONE}": conversations.Rename,
        "POST /v1/chat/completions": openai.CompletionBody,
    }
    chat: list[tuple[str, Route, str, str]] = [
        ("/", page.index, "GET", "The web chat page"),
        ("/static/{name:path}", page.static_asset, "GET", "The web chat page's assets"),
        ("/chat_stream", bind(chat_stream_endpoint), "POST", "Stream the next assistant reply"),
        ("/chat_stream/{message_id}", bind(replies.attach), "GET", "Follow a reply"),
        ("/stop_generation", bind(replies.stop_generation), "POST", "Stop a running reply"),
        ("/get_prompt", bind(get_prompt), "GET", "The conversation and its prompt"),
        ("/clear_context", bind(clear_context), "POST", "Start the conversation over"),
        ("/set_generation_params", bind(set_generation_params), "POST", "Set sampling parameters"),
        ("/get_generation_params", bind(get_generation_params), "GET", "Sampling parameters"),
        ("/set_feedback", bind(set_feedback), "POST", "Like or dislike a reply"),
        ("/conversations", bind(conversations.list_conversations), "GET", "The conversations"),
        ("/conversations", bind(conversations.create_conversation), "POST", "A new conversation"),
        (ONE, bind(conversations.get_conversation), "GET", "A conversation and its messages"),
        (ONE, bind(conversations.rename_conversation), "PATCH", "Rename a conversation"),
        (ONE, bind(conversations.delete_conversation), "DELETE", "Delete a conversation"),
        ("/get_load", bind(get_load), "GET", "Cluster-wide load"),
        ("/healthz", healthz, "GET", "Liveness"),
        ("/readyz", bind(readyz), "GET", "Readiness"),
        ("/metrics", bind(metrics), "GET", "Prometheus metrics"),
    ]
    v1: list[tuple[str, Route, str, str]] = [
        ("/v1/chat/completions", bind(openai.chat_completions), "POST", "OpenAI-compatible chat"),
        ("/v1/models", bind(openai.list_models), "GET", "OpenAI-compatible model list"),
        ("/v1/models/{model_id:path}", bind(openai.get_model), "GET", "OpenAI-compatible model"),
    ]
    surfaces: list[tuple[Surface, list[tuple[str, Route, str, str]]]] = [("chat", chat), ("v1", v1)]
    for surface, routes in surfaces:
        for path, route, method, summary in routes:
            body = bodies.get(f"{method} {path}")
            extra = None if body is None else request_body_schema(body)
            router.add_api_route(
                path,
                guarded(route, surface),
                methods=[method],
                summary=summary,
                openapi_extra=extra,
            )
    router.add_api_route(
        "/v1/{path:path}",
        guarded(bind(openai.unknown_route), "v1"),
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    return router


def request_body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a route that reads its JSON body itself (so that FastAPI
    cannot see it), with the model's definitions inlined."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    content = {"application/json": {"schema": inline(schema)}}
    return {"requestBody": {"required": True, "content": content}}
