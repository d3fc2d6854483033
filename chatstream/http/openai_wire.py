"""OpenAI's wire format for a completion: one ``chat.completion`` JSON body, or a stream of
``chat.completion.chunk`` server-sent ``data:`` lines ending with ``data: [DONE]``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.types import Send

from ..errors import ChatStreamError
from .responses import json_response
from .wire import RawHeaders, TextStreamWriter


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
        await self.respond(json_response(completion))

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
