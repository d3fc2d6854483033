"""The HTTP routes around a ChatStream; each endpoint also works alone in a user's own app."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sessions import Session, StoreUnavailable

from .errors import ChatStreamError, ServiceUnavailable
from .lease import session_lease
from .turn import SESSION_KEY

if TYPE_CHECKING:
    from .chat_stream import ChatStream

Endpoint = Callable[["ChatStream", Request], Awaitable[Response]]


def json_errors(endpoint: Endpoint) -> Endpoint:
    """Answer the chat layer's errors (and store outages) with their JSON error response."""

    @functools.wraps(endpoint)
    async def wrapper(chat_stream: ChatStream, request: Request) -> Response:
        try:
            return await endpoint(chat_stream, request)
        except StoreUnavailable as exc:
            return ServiceUnavailable(str(exc), retry_after=exc.retry_after).to_response()
        except ChatStreamError as exc:
            return exc.to_response()

    return wrapper


@json_errors
async def get_prompt(chat_stream: ChatStream, request: Request) -> Response:
    """``{"prompt": the text the model would see next, "messages": the stored turns}``."""
    history = chat_stream.load_history(request.state.session)
    messages = history.fitted_messages()
    return JSONResponse(
        {
            "prompt": chat_stream.engine.renderer.render(messages, add_generation_prompt=True),
            "system_prompt": history.system_prompt,
            "messages": [message.to_dict() for message in history.messages],
        }
    )


@json_errors
async def clear_context(chat_stream: ChatStream, request: Request) -> Response:
    """Start the conversation over (409 while this session is generating)."""
    session: Session = request.state.session
    async with session_lease(session, chat_stream.lease_ttl):
        session.get_session().pop(SESSION_KEY, None)
        await session.save_session()
    return JSONResponse({"status": "cleared"})


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(chat_stream: ChatStream, request: Request) -> Response:
    """Readiness: the model is loaded and the session store answers."""
    try:
        await request.state.session.store.ping()
    except StoreUnavailable as exc:
        return ServiceUnavailable(f"session store unreachable: {exc}").to_response()
    return JSONResponse({"status": "ready", "model": chat_stream.engine.model_name})


def build_router(chat_stream: ChatStream) -> APIRouter:
    router = APIRouter()

    def bind(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        async def route(request: Request) -> Response:
            return await endpoint(chat_stream, request)

        route.__doc__ = endpoint.__doc__
        return route

    async def chat_stream_route(request: Request) -> Response:
        return await chat_stream.handle_chat_stream_request(request)

    routes: list[tuple[str, Callable[[Request], Awaitable[Any]], str, str]] = [
        ("/chat_stream", chat_stream_route, "POST", "Stream the next assistant reply"),
        ("/get_prompt", bind(get_prompt), "GET", "The conversation and its prompt"),
        ("/clear_context", bind(clear_context), "POST", "Start the conversation over"),
        ("/healthz", healthz, "GET", "Liveness"),
        ("/readyz", bind(readyz), "GET", "Readiness"),
    ]
    for path, endpoint, method, summary in routes:
        router.add_api_route(path, endpoint, methods=[method], summary=summary)
    return router
