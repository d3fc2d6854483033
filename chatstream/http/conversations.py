"""The conversation routes: list, create, read, rename and delete the owner's conversations.

Another owner's conversation, or an id that is none, is ``404 not_found`` (never 403: ids
reveal nothing). Creating one makes it the session's active conversation ("New chat" keeps the
old one); deleting the active one leaves the session with none until the next turn or create.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.requests import Request
from starlette.responses import Response

from ..admission.lease import conversation_lease
from ..conversations.access import ConversationAccess, new_message_id
from ..conversations.prompt import Message
from ..conversations.store import Conversation, ConversationInfo
from ..errors import InvalidRequest, NotFound
from ..keys import valid_id
from ..validation import validate_object
from .body import parse_json, read_body
from .errors import json_errors
from .responses import json_response

if TYPE_CHECKING:
    from ..chat_stream import ChatStream

MAX_PAGE = 100
DEFAULT_PAGE = 50

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class NewConversation(BaseModel):
    """``{"title"?: str}`` (1 to 200 characters); without one, its first message names it."""

    model_config = ConfigDict(strict=True, extra="ignore")

    title: Title | None = None


class Rename(BaseModel):
    """``{"title": str}`` (1 to 200 characters)."""

    model_config = ConfigDict(strict=True, extra="ignore")

    title: Title = Field(...)


def summary(info: ConversationInfo, access: ConversationAccess) -> dict[str, Any]:
    return {**info.to_dict(), "active": info.id == access.active_id}


async def conversation_view(
    chat_stream: ChatStream, access: ConversationAccess, conversation: Conversation
) -> dict[str, Any]:
    """A conversation as the routes show it: its summary, system prompt and messages (a
    reply with its feedback, when it has some), and a reply that is generating: its user
    message, and the reply so far with ``"status": "generating"``."""
    messages = []
    for message in conversation.prompt.messages:
        shown = message.to_dict()
        if message.message_id in conversation.feedback:
            shown["feedback"] = conversation.feedback[message.message_id]
        messages.append(shown)
    running = await running_reply(chat_stream, access, conversation.info.id)
    if running is not None:
        start, pending, shown = running
        messages = [*messages[:start], *(m.to_dict() for m in pending), shown]
    return {
        **summary(conversation.info, access),
        "system_prompt": conversation.prompt.system_prompt,
        "messages": messages,
    }


async def running_reply(
    chat_stream: ChatStream, access: ConversationAccess, conversation_id: str
) -> tuple[int, list[Message], dict[str, Any]] | None:
    """The conversation's reply that generates now, wherever it runs: where it goes, the user
    message it answers (a new or edited one, or none), and the reply so far."""
    message_id = await access.store.lease(conversation_id).running()
    owner = await access.owner(create=False)
    if message_id is None or owner is None:
        return None
    local = chat_stream.replies.get(message_id)
    if local is not None:
        start, pending, text = local.start_at, local.pending, local.hub.text
    elif chat_stream.reply_config.record:
        store = chat_stream.reply_store(access.session)
        meta = await store.meta(message_id, owner)
        if meta is None or not meta.running:
            return None
        events = await store.events(message_id, 0)
        start, pending = meta.start, meta.pending
        text = "".join(e.data["text"] for e in events if e.name == "delta")
    else:
        return None
    shown = {"role": "assistant", "content": text, "message_id": message_id, "status": "generating"}
    return start, pending, shown


async def _access(chat_stream: ChatStream, request: Request) -> ConversationAccess:
    await request.state.session.load()
    return chat_stream.conversations(request)


async def _body(chat_stream: ChatStream, request: Request) -> object:
    limits = chat_stream.limits
    raw = await read_body(request, limits.max_json_bytes, limits.body_timeout)
    return parse_json(raw) if raw.strip() else {}


@json_errors
async def list_conversations(chat_stream: ChatStream, request: Request) -> Response:
    """``GET /conversations?limit=50&before=<cursor>``: most recently updated first."""
    limit_text = request.query_params.get("limit", str(DEFAULT_PAGE))
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
        raise InvalidRequest(f"limit must be a whole number from 1 to {MAX_PAGE}")
    access = await _access(chat_stream, request)
    owner = await access.owner(create=False)
    if owner is None:
        return json_response({"conversations": [], "next": None})
    try:
        page = await access.store.page(
            owner, limit=int(limit_text), before=request.query_params.get("before")
        )
    except ValueError:
        raise InvalidRequest("before must be the next cursor of an earlier page") from None
    conversations = [summary(info, access) for info in page.conversations]
    return json_response({"conversations": conversations, "next": page.next})


@json_errors
async def create_conversation(chat_stream: ChatStream, request: Request) -> Response:
    """``POST /conversations``: a new, empty conversation, now the active one."""
    body = validate_object(NewConversation, await _body(chat_stream, request))
    access = await _access(chat_stream, request)
    info = await access.create(body.title)
    return json_response(summary(info, access), 201)


@json_errors
async def get_conversation(chat_stream: ChatStream, request: Request) -> Response:
    """``GET /conversations/{id}``: the conversation with its messages."""
    access = await _access(chat_stream, request)
    conversation = await access.load(request.path_params["conversation_id"])
    return json_response(await conversation_view(chat_stream, access, conversation))


@json_errors
async def rename_conversation(chat_stream: ChatStream, request: Request) -> Response:
    """``PATCH /conversations/{id}`` ``{"title"}``: rename it."""
    body = validate_object(Rename, await _body(chat_stream, request))
    access = await _access(chat_stream, request)
    owner = await access.owner(create=False)
    info = None
    if owner is not None:
        info = await access.store.rename(owner, request.path_params["conversation_id"], body.title)
    if info is None:
        raise NotFound("there is no such conversation")
    return json_response(summary(info, access))


@json_errors
async def delete_conversation(chat_stream: ChatStream, request: Request) -> Response:
    """``DELETE /conversations/{id}``: gone, with its messages, feedback and recorded replies
    (409 while one of its replies generates)."""
    access = await _access(chat_stream, request)
    conversation_id = request.path_params["conversation_id"]
    owner = await access.owner(create=False)
    if owner is None or not valid_id(conversation_id):
        raise NotFound("there is no such conversation")
    lease = access.store.lease(conversation_id)
    async with conversation_lease(lease, new_message_id(), chat_stream.admission_config.lease_ttl):
        conversation = await access.store.load(owner, conversation_id)
        deleted = await access.store.delete(owner, conversation_id)
    if not deleted:
        raise NotFound("there is no such conversation")
    await access.forget(conversation_id)
    if conversation is not None:  # its recorded replies go too
        replies = chat_stream.reply_store(request.state.session)
        await replies.forget(
            m.message_id
            for m in conversation.prompt.messages
            if m.role == "assistant" and m.message_id is not None
        )
    return Response(status_code=204, headers={"Cache-Control": "no-store"})
