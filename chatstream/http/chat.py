"""``POST /chat_stream``: the next reply of the session's conversation, streamed.

What ``ChatStream.handle_chat_stream_request`` does: read and check the body, prepare the
turn (a new user message, or a regenerate), and answer with a
:class:`~chatstream.http.streaming.StreamedReply` of a :class:`~chatstream.chat.turn.TurnRun`,
or with a JSON error.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ..chat.outcome import CompletionCallback, Outcome, run_callback
from ..chat.turn import ChatTurn, TurnRun, prepare_turn
from .body import parse_json, read_body, validate_chat_body
from .clients import client_of
from .errors import error_response
from .guard import guard_request
from .streaming import StreamedReply
from .wire import EventStreamWriter, TextStreamWriter, wants_event_stream

if TYPE_CHECKING:
    from ..chat_stream import ChatStream


async def chat_stream_endpoint(
    chat_stream: ChatStream,
    request: Request,
    request_body: bytes | None = None,
    callback: CompletionCallback | None = None,
) -> Response:
    """The answer to one ``POST /chat_stream`` (see the README's API reference)."""
    limits = chat_stream.limits
    try:
        guard_request(chat_stream.access, request, "chat")
        if request_body is None:
            request_body = await read_body(request, limits.max_body_bytes, limits.body_timeout)
        data = parse_json(request_body)
    except Exception as exc:
        return error_response(exc)
    try:
        body = validate_chat_body(data, max_input_chars=limits.max_input_chars)
        session = request.state.session
        history = chat_stream.load_history(session).copy()
        prepare_turn(history, body.user_input, chat_stream.conversation_limits)
        message_id = uuid.uuid4().hex
        generation = chat_stream.generation_request(
            history, chat_stream.generation_settings(session), request_id=message_id
        )
    except Exception as exc:
        # The body parsed, so the callback hears of the refusal, after the response.
        refused = error_response(exc, RefusedTurn)
        refused.after = functools.partial(run_callback, callback, request, Outcome.REJECTED)
        return refused
    turn = ChatTurn(
        request, session, history, message_id, callback, chat_stream.admission_config.lease_ttl
    )
    run = TurnRun(
        turn,
        generation,
        chat_stream.services(session),
        client=client_of(request, "chat", chat_stream.owner_rule),
        route=request.url.path,
    )
    writer = (
        EventStreamWriter
        if wants_event_stream(request.headers.get("accept", ""))
        else TextStreamWriter
    )
    return StreamedReply(run, functools.partial(writer, message_id=message_id))


class RefusedTurn(JSONResponse):
    """A turn refused before generation: its JSON error, then ``after`` (the completion
    callback with ``rejected``), after any ``background`` task the endpoint set."""

    after: Callable[[], Awaitable[None]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)
        if self.after is not None:
            await self.after()
