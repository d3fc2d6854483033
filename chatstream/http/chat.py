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
from ..errors import InvalidRequest
from ..replies.hub import ReplyHub
from ..replies.running import RunningReply
from .body import parse_json, read_body, validate_chat_body
from .clients import client_of
from .errors import error_response
from .guard import guard_request
from .replies import follow_reply
from .streaming import FollowedReply
from .wire import writer_for

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
        if body.action == "continue" and not getattr(chat_stream.engine, "continues_replies", True):
            raise InvalidRequest(
                "this server's model cannot continue a reply (it runs on a remote inference "
                "server): regenerate it, or ask for more in a new message"
            )
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
        key = idempotency_key_of(request)
        if key is not None and chat_stream.reply_config.record:
            recorded = chat_stream.reply_store(session)
            earlier = await recorded.request(conversation.info.id, key)
            if earlier is not None:  # a retried POST: the reply it started, not a second turn
                writer = writer_for(request, earlier)
                return await follow_reply(chat_stream, request, earlier, writer)
        plan = plan_turn(
            conversation,
            body.action,
            chat_stream.conversation_limits,
            text=body.text,
            message_id=None if body.edit is None else body.edit.message_id,
        )
        turn = ChatTurn(
            request,
            access,
            owner,
            conversation,
            plan,
            new_message_id(),
            callback,
            chat_stream.admission_config.lease_ttl,
            idempotency_key=key,
        )
        running = _running_reply(chat_stream, turn)
        await chat_stream.replies.start(running)
    except Exception as exc:
        return _refused(exc, request, callback)
    writer = writer_for(request, running.message_id)
    return FollowedReply(running.hub.follow(), writer, finished=running.task)


def _running_reply(chat_stream: ChatStream, turn: ChatTurn) -> RunningReply:
    """The turn's run, ready to start, with its hub and its record."""
    session, plan = turn.request.state.session, turn.plan
    generation = chat_stream.generation_request(
        plan.history,
        chat_stream.generation_settings(session),
        request_id=turn.message_id,
        assistant_prefix=plan.continues.content if plan.continues else "",
    )
    config = chat_stream.reply_config
    turn.replies = chat_stream.reply_store(session) if config.record else None
    turn.reply_ttl = config.reply_ttl
    services = chat_stream.services(session)
    run = TurnRun(
        turn,
        generation,
        services,
        client=client_of(
            turn.request, "chat", chat_stream.owner_rule, chat_stream.access.key_digests
        ),
        route=turn.request.url.path,
    )
    estimate = services.times.wait if services.times else _no_estimate
    return RunningReply(
        run,
        ReplyHub(turn.message_id, estimate),
        config,
        owner=turn.owner,
        conversation_id=turn.conversation.info.id,
        start=plan.start,
        pending=plan.pending,
        store=turn.replies,
    )


def _no_estimate(position: int) -> None:
    return None


class RefusedTurn(JSONResponse):
    """A turn refused before generation: its JSON error, then ``after`` (the completion
    callback with ``rejected``), after any ``background`` task the endpoint set."""

    after: Callable[[], Awaitable[None]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)
        if self.after is not None:
            await self.after()


def _refused(exc: Exception, request: Request, callback: CompletionCallback | None) -> Response:
    """The body parsed, so the callback hears of the refusal, after the response."""
    refused = error_response(exc, RefusedTurn)
    refused.after = functools.partial(run_callback, callback, request, Outcome.REJECTED)
    return refused


MAX_IDEMPOTENCY_KEY = 128


def idempotency_key_of(request: Request) -> str | None:
    """The request's ``Idempotency-Key`` (1 to 128 visible ASCII characters), if it has one."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY or not key.isascii() or not key.isprintable():
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible characters"
        )
    return key
