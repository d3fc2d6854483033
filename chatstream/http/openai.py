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
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from ..chat.params import GenerationSettings, MaxNewTokens, Temperature, TopP, check_limit
from ..chat.run import GenerationRun
from ..conversations.prompt import ChatPrompt, Message, Role
from ..errors import InvalidRequest, MethodNotAllowed, NotFound
from ..validation import validate_object
from .body import parse_json, read_body
from .clients import client_of
from .errors import json_errors
from .openai_wire import ChunkWriter, CompletionHead, CompletionWriter
from .responses import json_response
from .streaming import StreamedReply, WriterFactory

if TYPE_CHECKING:
    from ..chat_stream import ChatStream

MAX_STOP_STRINGS = 4
MAX_STOP_LENGTH = 64
MAX_MODEL_LENGTH = 256
_LOADED_AT = int(time.time())


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    @property
    def chat_role(self) -> Role:
        """OpenAI's ``developer`` messages are its newer name for system messages."""
        return "system" if self.role == "developer" else self.role

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class StreamOptions(_Strict):
    include_usage: bool | None = None


StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_LENGTH)]


class CompletionBody(_Strict):
    """The request body: JSON types are strict, ranges those of ``/set_generation_params``."""

    model: Annotated[str, Field(max_length=MAX_MODEL_LENGTH)] | None = None
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
        messages = [Message(message.chat_role, message.text) for message in self.messages]
        if messages[0].role == "system":
            system_prompt = messages.pop(0).content
        return ChatPrompt(system_prompt, messages)

    def settings(
        self, defaults: GenerationSettings, max_new_tokens_limit: int
    ) -> GenerationSettings:
        """``defaults`` with what this request sets (422 beyond the server's reply limit)."""
        max_new_tokens = self.max_completion_tokens or self.max_tokens
        name = "max_completion_tokens" if self.max_completion_tokens else "max_tokens"
        check_limit(max_new_tokens, max_new_tokens_limit, name)
        changes = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": max_new_tokens,
        }
        return defaults.model_copy(update={k: v for k, v in changes.items() if v is not None})

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


def validate_completion_body(data: object) -> CompletionBody:
    if isinstance(data, dict):
        refuse_unsupported(data)
    return validate_object(CompletionBody, data)


# OpenAI parameters that change what the answer is, which this server does not implement: each
# is refused (422) when it asks for something other than the default, never silently ignored.
_UNSUPPORTED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "response_format": (
        lambda v: not (isinstance(v, dict) and v.get("type") == "text"),
        "structured output (JSON mode, JSON schema) is not implemented",
    ),
    "logprobs": (lambda v: v is not False, "log probabilities are not implemented"),
    "top_logprobs": (lambda v: v not in (0,), "log probabilities are not implemented"),
    "logit_bias": (lambda v: v != {}, "logit_bias is not implemented"),
    "presence_penalty": (lambda v: v not in (0, 0.0), "presence_penalty is not implemented"),
    "frequency_penalty": (lambda v: v not in (0, 0.0), "frequency_penalty is not implemented"),
    "seed": (lambda v: True, "seeded (reproducible) sampling is not implemented"),
    "functions": (lambda v: v != [], "function calling is not implemented"),
    "function_call": (lambda v: v != "none", "function calling is not implemented"),
    "modalities": (lambda v: v != ["text"], "only text output is implemented"),
    "audio": (lambda v: True, "audio output is not implemented"),
    "prediction": (lambda v: True, "predicted outputs are not implemented"),
    "web_search_options": (lambda v: True, "web search is not implemented"),
}


def refuse_unsupported(data: dict[str, Any]) -> None:
    """422 for a parameter that would change the answer and is not implemented (``null``
    counts as left out). Tools are accepted only with ``tool_choice: "none"``."""
    for name, (asks, why) in _UNSUPPORTED.items():
        value = data.get(name)
        if value is not None and asks(value):
            raise InvalidRequest(f"{name} is not supported by this server: {why}")
    tools, choice = data.get("tools"), data.get("tool_choice")
    if tools and choice != "none":
        raise InvalidRequest(
            "tools are not supported by this server (tool calls are not implemented): "
            'leave them out or set tool_choice to "none"'
        )
    if tools is None and choice not in (None, "none", "auto"):
        raise InvalidRequest("tool_choice names a tool, but tools are not supported")


class CompletionRun(GenerationRun):
    """Holds nothing and stores nothing. A reply the server cut short is no completion an
    OpenAI client could tell from a whole one, so it ends as an error."""

    async def settle(self) -> bool:
        return self.reply.finish_reason != "cancelled"


# -- the routes ----------------------------------------------------------------------------------


@json_errors
async def chat_completions(chat_stream: ChatStream, request: Request) -> Response:
    """OpenAI's ``POST /v1/chat/completions``: the whole reply as JSON, or streamed as SSE."""
    limits = chat_stream.limits
    body = validate_completion_body(
        parse_json(await read_body(request, limits.max_body_bytes, limits.body_timeout))
    )
    head = CompletionHead(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=body.model or chat_stream.engine.model_name,
    )
    generation = chat_stream.generation_request(
        body.history(chat_stream.system_prompt),
        body.settings(chat_stream.defaults, limits.max_new_tokens_limit),
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
        chat_stream.services(getattr(request.state, "session", None)),
        client=client_of(request, "v1", chat_stream.owner_rule, chat_stream.access.key_digests),
        route=request.url.path,
    )
    return StreamedReply(run, writer)


def model_object(chat_stream: ChatStream) -> dict[str, Any]:
    return {
        "id": chat_stream.engine.model_name,
        "object": "model",
        "created": _LOADED_AT,
        "owned_by": "chatstream",
    }


@json_errors
async def list_models(chat_stream: ChatStream, request: Request) -> Response:
    """OpenAI's ``GET /v1/models``: the one model this server serves."""
    return json_response({"object": "list", "data": [model_object(chat_stream)]})


@json_errors
async def get_model(chat_stream: ChatStream, request: Request) -> Response:
    """OpenAI's ``GET /v1/models/{id}``: the served model, or 404."""
    if request.path_params["model_id"] != chat_stream.engine.model_name:
        raise NotFound("this server serves no model of that name: see GET /v1/models")
    return json_response(model_object(chat_stream))


_ROUTES = ("chat/completions", "models")


@json_errors
async def unknown_route(chat_stream: ChatStream, request: Request) -> Response:
    """Any other ``/v1/...`` route: an OpenAI-shaped answer, never an HTML or bare 404."""
    if request.path_params["path"] in _ROUTES:
        raise MethodNotAllowed(f"{request.method} is not allowed here")
    raise NotFound("this server has no such OpenAI-compatible route")
