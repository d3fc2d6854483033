"""Reading request bodies (bounded), parsing them as JSON, and the body of ``POST /chat_stream``."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import ClientDisconnect, Request

from ..chat.turn import Action
from ..errors import InputTooLong, InvalidJSON, InvalidRequest, RequestTimeout
from ..validation import validate_object

MessageId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class Edit(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    message_id: MessageId
    user_input: str


class ChatStreamBody(BaseModel):
    """``{"user_input": str}``, or ``{"regenerate": true}``, ``{"edit": {"message_id",
    "user_input"}}`` or ``{"continue": true}``, each with an optional ``"conversation_id"``
    (one of the owner's, which becomes the active one). Types are strict, unknown fields are
    ignored; with ``regenerate`` (the seed's), ``user_input`` is ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)

    user_input: str | None = None
    regenerate: bool = False
    edit: Edit | None = None
    continue_: bool = Field(False, alias="continue")
    conversation_id: MessageId | None = None

    @property
    def action(self) -> Action:
        if self.regenerate:
            return "regenerate"
        if self.edit is not None:
            return "edit"
        return "continue" if self.continue_ else "say"

    @property
    def text(self) -> str | None:
        """The user message the turn says (a new one, or an edit's)."""
        if self.edit is not None:
            return self.edit.user_input
        return self.user_input if self.action == "say" else None


async def read_body(request: Request, limit: int, timeout: float) -> bytes:  # noqa: ASYNC109
    """The raw body, refused with 413 as soon as it is known to exceed ``limit`` bytes, and
    with 408 when it takes over ``timeout`` seconds to arrive (a client that trickles a byte at
    a time must not hold the server)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise InputTooLong(f"the request body is over {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise InputTooLong(f"the request body is over {limit} bytes")
    except ClientDisconnect:
        raise InvalidJSON("the client left before the request body was sent") from None
    except TimeoutError:
        raise RequestTimeout(f"the request body took over {timeout:g} s to arrive") from None
    return bytes(body)


def parse_json(body: bytes) -> object:
    """The body's JSON value; 400 for anything that is not JSON text (RFC 8259).

    Beyond syntax errors, that refuses what Python's json reads but nothing can store or send
    on: ``NaN``/``Infinity`` and numbers that overflow to them (``1e400``), lone surrogates such
    as ``"\\ud800"`` (not UTF-8), integers over Python's digit limit and nesting beyond its
    recursion limit.
    """
    try:
        data = json.loads(body)
        json.dumps(data, ensure_ascii=False, allow_nan=False).encode()
    except (ValueError, RecursionError) as exc:  # UnicodeError and JSONDecodeError included
        raise InvalidJSON(f"the request body is not valid JSON: {exc}") from None
    return data


def validate_chat_body(data: object, *, max_input_chars: int) -> ChatStreamBody:
    """The body, checked: one action at most, and the text it says non-empty and not too long."""
    parsed = validate_object(ChatStreamBody, data)
    if [parsed.regenerate, parsed.edit is not None, parsed.continue_].count(True) > 1:
        raise InvalidRequest("regenerate, edit and continue are separate turns: send one")
    if parsed.action in ("regenerate", "continue"):
        return parsed
    text = parsed.text
    if text is None or not text.strip():
        raise InvalidRequest("user_input must be a non-empty string")
    if len(text) > max_input_chars:
        raise InputTooLong(f"user_input is over {max_input_chars} characters")
    return parsed
