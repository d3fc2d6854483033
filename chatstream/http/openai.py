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
import json
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Send

from ..chat.params import GenerationSettings, MaxNewTokens, Temperature, TopP
from ..chat.run import GenerationRun
from ..conversations.prompt import ChatPrompt, Message
from ..errors import ChatStreamError, Unauthorized
from ..validation import validate_object
from .body import parse_json, read_body
from .errors import json_errors
from .streaming import StreamedReply, WriterFactory
from .wire import RawHeaders, TextStreamWriter

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


# -- the answers ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompletionHead:
    """The fields every object of one completion starts with."""

    id: str
    created: int
    model: str

    def fields(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}


def _usage(summary: dict[str, Any]) -> dict[str, Any]:
    usage = summary["usage"]
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": usage["cached_tokens"]},
    }


class CompletionWriter(TextStreamWriter):
    """``stream: false``: one ``chat.completion`` JSON body once the reply is complete, or the
    JSON error instead; nothing is sent before."""

    def __init__(self, send: Send, headers: RawHeaders, *, head: CompletionHead) -> None:
        super().__init__(send, headers, message_id=head.id)
        self.head = head
        self._parts: list[str] = []

    async def start(self) -> None:
        """The status is known only at the end."""

    async def delta(self, text: str) -> None:
        self._parts.append(text)

    async def done(self, summary: dict[str, Any]) -> None:
        message = {"role": "assistant", "content": "".join(self._parts)}
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": summary["finish_reason"],
        }
        completion = {
            **self.head.fields("chat.completion"),
            "choices": [choice],
            "usage": _usage(summary),
        }
        await self.respond(JSONResponse(completion))

    async def error(self, error: ChatStreamError) -> None:
        await self.reject(error)

    async def end(self) -> None:
        """The whole body went out with ``done`` or ``error``."""


class ChunkWriter(TextStreamWriter):
    """``stream: true``: server-sent ``data:`` lines, each a ``chat.completion.chunk``: the
    role, the content deltas, the finish reason, with ``include_usage`` one more chunk with the
    usage and no choices, then ``data: [DONE]``. Comment lines keep the connection alive while
    the request is queued."""

    media_type = "text/event-stream; charset=utf-8"

    def __init__(
        self, send: Send, headers: RawHeaders, *, head: CompletionHead, include_usage: bool
    ) -> None:
        super().__init__(send, headers, message_id=head.id)
        self.head = head
        self.include_usage = include_usage
        self._role_sent = False

    async def start(self) -> None:
        await super().start()
        if not self._role_sent:
            self._role_sent = True
            await self._chunk({"role": "assistant", "content": ""})

    async def keep_alive(self) -> None:
        await super().start()
        await self._body(b": keep-alive\n\n")

    async def delta(self, text: str) -> None:
        await self.start()
        await self._chunk({"content": text})

    async def done(self, summary: dict[str, Any]) -> None:
        await self._chunk({}, summary["finish_reason"])
        if self.include_usage:
            usage = {**self.head.fields("chat.completion.chunk"), "choices": []}
            await self._data({**usage, "usage": _usage(summary)})
        await self._body(b"data: [DONE]\n\n")

    async def error(self, error: ChatStreamError) -> None:
        await super().start()
        await self._data({"error": {"code": error.code, "message": error.message}})

    async def _chunk(self, delta: dict[str, str], finish_reason: str | None = None) -> None:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        chunk = {**self.head.fields("chat.completion.chunk"), "choices": [choice]}
        if self.include_usage:
            chunk["usage"] = None
        await self._data(chunk)

    async def _data(self, payload: dict[str, Any]) -> None:
        line = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        await self._body(f"data: {line}\n\n".encode())


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
