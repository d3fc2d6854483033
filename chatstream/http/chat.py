"""``POST /chat_stream``: the next reply of one of the owner's conversations, streamed.

What ``ChatStream.handle_chat_stream_request`` does: check the request and read its body, find
the conversation (the one named, or the active one, made when there is none), plan the turn (a
new message, a regenerate, an edit, a continue), and answer with a
:class:`~chatstream.http.streaming.StreamedReply` of a :class:`~chatstream.chat.turn.TurnRun`,
or with a JSON error.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ..chat.outcome import CompletionCallback, Outcome, run_callback
from ..chat.turn import ChatTurn, TurnRun, plan_turn
from ..conversations.access import new_message_id
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
        await session.load()
        access = chat_stream.conversations(request)
        if body.conversation_id is not None:
            conversation = await access.use(body.conversation_id)
        else:
            active = await access.active(create=True)
            assert active is not None
            conversation = active
        owner = await access.owner(create=True)
        assert owner is not None
        plan = plan_turn(
            conversation,
            body.action,
            chat_stream.conversation_limits,
            text=body.text,
            message_id=None if body.edit is None else body.edit.message_id,
        )
        message_id = new_message_id()
        generation = chat_stream.generation_request(
            plan.history,
            chat_stream.generation_settings(session),
            request_id=message_id,
            assistant_prefix=plan.continues.content if plan.continues else "",
        )
    except Exception as exc:
        # The body parsed, so the callback hears of the refusal, after the response.
        refused = error_response(exc, RefusedTurn)
        refused.after = functools.partial(run_callback, callback, request, Outcome.REJECTED)
        return refused
    lease_ttl = chat_stream.admission_config.lease_ttl
    turn = ChatTurn(request, access, owner, conversation, plan, message_id, callback, lease_ttl)
    run = TurnRun(
        turn,
        generation,
        chat_stream.services(session),
        client=client_of(request, "chat", chat_stream.owner_rule),
        route=request.url.path,
    )
    sse = wants_event_stream(request.headers.get("accept", ""))
    writer = EventStreamWriter if sse else TextStreamWriter
    return StreamedReply(run, functools.partial(writer, message_id=message_id))


class RefusedTurn(JSONResponse):
    """A turn refused before generation: its JSON error, then ``after`` (the completion
    callback with ``rejected``), after any ``background`` task the endpoint set."""

    after: Callable[[], Awaitable[None]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)
        if self.after is not None:
            await self.after()
