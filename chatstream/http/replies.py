"""Following and stopping replies from anywhere: ``GET /chat_stream/{message_id}`` and
``POST /stop_generation``.

A reply is followed from wherever it is: running on this instance (its hub), running on
another (its record in Redis), or ended (its record, for ``reply_ttl`` seconds; after that, its
stored conversation: the active one, or ``?conversation_id=``). Only its owner may follow or stop
it: anyone else, like an unknown id, gets ``404 not_found``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response

from ..conversations.prompt import Message
from ..errors import InvalidRequest, NotFound, NothingRunning
from ..keys import valid_id
from ..replies.follow import follow_recorded, follow_stored
from ..replies.hub import FollowItem
from ..validation import validate_object
from .body import MessageId, parse_json, read_body
from .errors import json_errors
from .responses import json_response
from .streaming import FollowedReply, FollowerFactory
from .wire import wants_event_stream, writer_for

if TYPE_CHECKING:
    from ..chat_stream import ChatStream


class StopBody(BaseModel):
    """``{"message_id"?: str}``: that reply, or the active conversation's running one."""

    model_config = ConfigDict(strict=True, extra="ignore")

    message_id: MessageId | None = None


async def follow_reply(
    chat_stream: ChatStream, request: Request, message_id: str, writer: FollowerFactory
) -> Response:
    """The owner's reply ``message_id`` after ``Last-Event-ID`` (or ``?last_event_id=``)."""
    items = await _items(chat_stream, request, message_id, _last_event_id(request))
    if items is None:
        raise NotFound("there is no such reply")
    return FollowedReply(items, writer)


async def _items(
    chat_stream: ChatStream, request: Request, message_id: str, after: int
) -> AsyncGenerator[FollowItem, None] | None:
    await request.state.session.load()
    access = chat_stream.conversations(request)
    owner = await access.owner(create=False)
    if owner is None or not valid_id(message_id):
        return None
    running = chat_stream.replies.get(message_id)
    if running is not None and running.owner == owner:
        return running.hub.follow(after)
    store = chat_stream.reply_store(request.state.session)
    meta = await store.meta(message_id, owner) if chat_stream.reply_config.record else None
    if meta is not None:

        async def stored() -> Message | None:
            conversation = await access.store.load(owner, meta.conversation_id)
            found = None if conversation is None else conversation.prompt.find(message_id)
            return found if found is not None and found.role == "assistant" else None

        return follow_recorded(store, message_id, owner, after, stored)
    named = request.query_params.get("conversation_id")
    conversation = await access.load(named) if named else await access.active(create=False)
    message = None if conversation is None else conversation.prompt.find(message_id)
    if message is None or message.role != "assistant":
        return None
    return follow_stored(message, after)


def _last_event_id(request: Request) -> int:
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id") or "0"
    if not raw.isdigit() or len(raw) > 9:
        raise InvalidRequest("Last-Event-ID must be the id of an event of this reply")
    return int(raw)


@json_errors
async def attach(chat_stream: ChatStream, request: Request) -> Response:
    """``GET /chat_stream/{message_id}``: follow a reply; server-sent events after
    ``Last-Event-ID`` with ``Accept: text/event-stream``, else its text from the start."""
    message_id = request.path_params["message_id"]
    if _last_event_id(request) and not wants_event_stream(request.headers.get("accept", "")):
        raise InvalidRequest("Last-Event-ID needs Accept: text/event-stream")
    return await follow_reply(chat_stream, request, message_id, writer_for(request, message_id))


@json_errors
async def stop_generation(chat_stream: ChatStream, request: Request) -> Response:
    """``POST /stop_generation`` ``{"message_id"?}``: stop the owner's running reply, on
    whichever instance generates it (within a second); 409 ``nothing_running`` when none."""
    limits = chat_stream.limits
    raw = await read_body(request, limits.max_json_bytes, limits.body_timeout)
    body = validate_object(StopBody, parse_json(raw) if raw.strip() else {})
    await request.state.session.load()
    access = chat_stream.conversations(request)
    owner = await access.owner(create=False)
    message_id = body.message_id
    if message_id is None and owner is not None and access.active_id is not None:
        message_id = await access.store.lease(access.active_id).running()
    if owner is None or message_id is None:
        raise NothingRunning("no reply is generating")
    running = chat_stream.replies.get(message_id)
    if running is not None and running.owner == owner:
        running.stop()
    elif not (
        chat_stream.reply_config.record
        and await chat_stream.reply_store(request.state.session).stop(message_id, owner)
    ):
        raise NothingRunning("no reply of that id is generating")
    return json_response({"status": "stopping", "message_id": message_id})
