"""The OpenAI-compatible, stateless API: ``POST /v1/chat/completions`` and ``GET /v1/models``.

A completion is a :class:`~chatstream.chat.run.GenerationRun` like a chat turn: it waits in
the same admission queue, is cancelled when its client leaves and shows in the same metrics. It
holds no session lease and stores nothing. The body follows OpenAI's; of the fields this server
does not implement, ``n`` must be 1 and the rest are ignored. The conversation is fitted to the
context like a chat's (oldest turns dropped, the leading system message kept); without a
leading system message the chat's ``system_prompt`` applies. Text parts of a message's content
are joined with newlines. When the ChatStream has ``api_keys``, both routes require one as a
Bearer token.

Finish reasons: ``stop`` and ``length`` as OpenAI's. A reply that fails, or that the server cuts
short (the engine shutting down), is an error: ``500 generation_failed``, or in a stream that
already started, a ``data: {"error": ...}`` line, which the openai client raises.
"""

from __future__ import annotations

import functools
import hmac
import time
import uuid
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..chat.params import GenerationSettings, MaxNewTokens, Temperature, TopP
from ..chat.run import GenerationRun
from ..conversations.prompt import ChatPrompt, Message
from ..errors import Unauthorized
from ..validation import validate_object
from .body import parse_json, read_body
from .errors import json_errors
from .openai_wire import ChunkWriter, CompletionHead, CompletionWriter
from .streaming import StreamedReply, WriterFactory

if TYPE_CHECKING:
    from ..chat_stream import ChatStream

MAX_STOP_STRINGS = 4
_LOADED_AT = int(time.time())


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class StreamOptions(_Strict):
    include_usage: bool | None = None


StopString = Annotated[str, Field(min_length=1)]


class CompletionBody(_Strict):
    """The request body: JSON types are strict, ranges those of ``/set_generation_params``."""

    model: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    stream: bool | None = None
    max_tokens: MaxNewTokens | None = None
    max_completion_tokens: MaxNewTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOP_STRINGS)] | None = None
    stream_options: StreamOptions | None = None
    n: Literal[1] | None = None

    def history(self, system_prompt: str | None) -> ChatPrompt:
        messages = [Message(message.role, message.text) for message in self.messages]
        if messages[0].role == "system":
            system_prompt = messages.pop(0).content
        return ChatPrompt(system_prompt, messages)

    def settings(self, defaults: GenerationSettings) -> GenerationSettings:
        """``defaults`` with what this request sets."""
        changes = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_completion_tokens or self.max_tokens,
        }
        return defaults.model_copy(update={k: v for k, v in changes.items() if v is not None})

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


def validate_completion_body(data: object) -> CompletionBody:
    return validate_object(CompletionBody, data)


def check_api_key(chat_stream: ChatStream, request: Request) -> None:
    """Refuse (401) a request without one of ``chat_stream.api_keys`` as its Bearer token.

    Every key is compared, in constant time, so timing tells nothing about any of them."""
    if not chat_stream.api_keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    given = token.strip().encode()
    matched = False
    for key in chat_stream.api_keys:
        matched |= hmac.compare_digest(given, key.encode())
    if scheme.lower() != "bearer" or not matched:
        raise Unauthorized("this API needs a valid key: Authorization: Bearer <key>")


class CompletionRun(GenerationRun):
    """Holds nothing and stores nothing. A reply the server cut short is no completion an
    OpenAI client could tell from a whole one, so it ends as an error."""

    async def settle(self) -> bool:
        return self.reply.finish_reason != "cancelled"


# -- the routes ----------------------------------------------------------------------------------


@json_errors
async def chat_completions(chat_stream: ChatStream, request: Request) -> Response:
    """OpenAI's ``POST /v1/chat/completions``: the whole reply as JSON, or streamed as SSE."""
    check_api_key(chat_stream, request)
    body = validate_completion_body(
        parse_json(await read_body(request, chat_stream.limits.max_body_bytes))
    )
    head = CompletionHead(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=body.model or chat_stream.engine.model_name,
    )
    generation = chat_stream.generation_request(
        body.history(chat_stream.system_prompt),
        body.settings(chat_stream.defaults),
        request_id=head.id,
        stop=body.stop_strings(),
    )
    writer: WriterFactory
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        writer = functools.partial(ChunkWriter, head=head, include_usage=include_usage)
    else:
        writer = functools.partial(CompletionWriter, head=head)
    run = CompletionRun(
        generation,
        engine=chat_stream.engine,
        admission=chat_stream.admission_for(getattr(request.state, "session", None)),
        metrics=chat_stream.metrics,
        route=request.url.path,
    )
    return StreamedReply(run, writer)


@json_errors
async def list_models(chat_stream: ChatStream, request: Request) -> Response:
    """OpenAI's ``GET /v1/models``: the one model this server serves."""
    check_api_key(chat_stream, request)
    model = {
        "id": chat_stream.engine.model_name,
        "object": "model",
        "created": _LOADED_AT,
        "owned_by": "chatstream",
    }
    return JSONResponse({"object": "list", "data": [model]})
