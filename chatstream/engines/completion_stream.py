"""One streamed chat completion from an OpenAI-compatible server, read in a task of its own.

:class:`CompletionStream` posts the request and reads the server-sent ``data:`` lines into a
queue, parsed (:func:`parse_line`), to the end of the body. The reply is whole at ``data:
[DONE]``, or once its finish reason and usage are in (some servers, ``transformers serve``
among them, send no ``[DONE]``), which may be a while before the body ends. The consumer only
ever awaits the queue, so that whoever closes the stream (the consumer, or the engine shutting
down) cancels the reading task, which closes the HTTP response and with it the connection: the
server sees the disconnect and stops generating. Whatever goes wrong on the wire is an
:class:`UpstreamError`, translated once, here, from httpx's errors.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

REFUSING_STATUSES = frozenset({400, 413, 422})
"""What a server answers a request it will not run (a parameter it does not take, a prompt
longer than its context): the request is at fault, not the server."""

DRAIN_TIMEOUT = 2.0
"""Seconds a finished reply's connection may take to end its body (servers end it at once)."""

_ERROR_BODY_CHARS = 500


class UpstreamError(RuntimeError):
    """The upstream could not be reached, failed, or sent something that is not a streamed
    chat completion."""


class UpstreamRefused(UpstreamError):
    """The upstream refused the request itself (:data:`REFUSING_STATUSES`)."""


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Chunk:
    """What one ``data:`` line carries: reply text, the finish reason, the usage; ``last``
    for ``[DONE]``, after which no more chunks come."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    last: bool = False


@dataclass(frozen=True, slots=True)
class End:
    """The stream's end: ``error`` when it broke, else the body's end (or the reading was
    cancelled)."""

    error: BaseException | None = None


def parse_line(line: str) -> Chunk | None:
    """One line of the event stream: a :class:`Chunk`, or ``None`` for a line that carries
    nothing (blank lines, comments, other fields). An error object, or a ``data:`` line that
    is no chat completion chunk, raises :class:`UpstreamError`."""
    if not line.startswith("data:"):
        return None
    data = line.removeprefix("data:").strip()
    if data == "[DONE]":
        return Chunk(last=True)
    try:
        payload = json.loads(data)
        if "error" in payload:
            raise UpstreamError(f"the upstream failed: {_error_message(payload['error'])}")
        return _chunk(payload)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise UpstreamError(f"the upstream sent a line that is not a chunk: {data[:80]!r}") from exc


def _chunk(payload: dict[str, Any]) -> Chunk:
    text, finish_reason = "", None
    if choices := payload.get("choices"):
        content = (choices[0].get("delta") or {}).get("content")
        text = content if isinstance(content, str) else ""
        finish_reason = choices[0].get("finish_reason")
    usage = payload.get("usage")
    if not usage:
        return Chunk(text, finish_reason)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return Chunk(
        text,
        finish_reason,
        Usage(int(usage["prompt_tokens"]), int(usage["completion_tokens"]), int(cached)),
    )


def _error_message(error: object) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


class CompletionStream:
    """Posts ``body`` to ``chat/completions`` of ``client`` and reads the reply, in a task
    started at once. :meth:`receive` gives its chunks, then one :class:`End`."""

    def __init__(self, client: httpx.AsyncClient, body: dict[str, Any]) -> None:
        self._queue: asyncio.Queue[Chunk | End] = asyncio.Queue()
        self._task = asyncio.create_task(self._read(client, body))

    async def receive(self) -> Chunk | End:
        return await self._queue.get()

    async def close(self) -> None:
        """Stop reading and wait until the response is closed; a consumer still waiting gets
        :class:`End` (without an error) next."""
        self._task.cancel()
        await asyncio.wait({self._task})

    def release(self, on_released: Callable[[], object]) -> None:
        """The reply is whole: read the rest of the body in the background, so that the
        connection goes back to the pool, for :data:`DRAIN_TIMEOUT` seconds at most (then
        close it); call ``on_released`` when done."""
        deadline = asyncio.get_running_loop().call_later(DRAIN_TIMEOUT, self._task.cancel)

        def released(_: object) -> None:
            deadline.cancel()
            on_released()

        self._task.add_done_callback(released)

    async def _read(self, client: httpx.AsyncClient, body: dict[str, Any]) -> None:
        error: Exception | None = None
        try:
            await self._stream(client, body)
        except Exception as exc:
            error = exc
        finally:  # cancelled too: the consumer always gets its End
            self._queue.put_nowait(End(error))

    async def _stream(self, client: httpx.AsyncClient, body: dict[str, Any]) -> None:
        try:
            async with client.stream("POST", "chat/completions", json=body) as response:
                await _check(response)
                # Read to the body's end, past [DONE]: a response read whole leaves its
                # connection in the pool for the next generation.
                async for line in response.aiter_lines():
                    if chunk := parse_line(line):
                        self._queue.put_nowait(chunk)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"streaming from the upstream failed: {exc!r}") from exc


async def _check(response: httpx.Response) -> None:
    """Raise unless ``response`` is the start of an event stream."""
    if response.status_code >= 400:
        text = (await response.aread()).decode(errors="replace")[:_ERROR_BODY_CHARS]
        kind = UpstreamRefused if response.status_code in REFUSING_STATUSES else UpstreamError
        raise kind(f"the upstream answered {response.status_code}: {text}")
    content_type = response.headers.get("content-type", "")
    if response.status_code != 200 or not content_type.startswith("text/event-stream"):
        raise UpstreamError(
            f"the upstream answered {response.status_code} {content_type!r}, not an event stream"
        )
