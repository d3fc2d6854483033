"""Reading request bodies (bounded), parsing them as JSON, and the body of ``POST /chat_stream``."""

from __future__ import annotations

import asyncio
import json

from pydantic import BaseModel, ConfigDict
from starlette.requests import ClientDisconnect, Request

from ..errors import InputTooLong, InvalidJSON, InvalidRequest, RequestTimeout
from ..validation import validate_object


class ChatStreamBody(BaseModel):
    """``{"user_input": str, "regenerate": bool = false}``; types are strict, unknown fields
    are ignored, and ``user_input`` may be left out when ``regenerate`` is true."""

    model_config = ConfigDict(strict=True, extra="ignore")

    user_input: str | None = None
    regenerate: bool = False


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
    """The body, with ``user_input`` set to ``None`` for a regenerate (which ignores it)."""
    parsed = validate_object(ChatStreamBody, data)
    if parsed.regenerate:
        return parsed.model_copy(update={"user_input": None})
    if parsed.user_input is None or not parsed.user_input.strip():
        raise InvalidRequest("user_input must be a non-empty string")
    if len(parsed.user_input) > max_input_chars:
        raise InputTooLong(f"user_input is over {max_input_chars} characters")
    return parsed
