"""The remote engine: replies streamed from an OpenAI-compatible inference server.

chatstream keeps the sessions, conversations, the queue and resumable replies; the upstream
(vLLM, TGI, llama.cpp's server, Ollama, ``transformers serve``, another chatstream) runs the
model and scales on its own. Each generation is one streamed ``POST /chat/completions`` on a
pooled connection (:mod:`~chatstream.engines.completion_stream`); closing the stream closes
that request, and the upstream stops generating.

Failures before the first text reached the consumer raise a chat-layer error, which the client
gets as its answer: :class:`~chatstream.errors.UpstreamUnavailable` (503, ``Retry-After``)
when the upstream cannot be reached, times out, answers an error status or streams something
that is no chat completion; :class:`~chatstream.errors.InvalidRequest` (422) when it refuses
the request itself (400, 413, 422: a parameter it does not take, a prompt past its context).
Nothing was sent, so a client may retry. After the first text, the stream raises
:class:`~chatstream.engines.completion_stream.UpstreamError`: the reply ends as an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import httpx

from ..errors import InvalidRequest, UpstreamUnavailable
from .base import (
    FinishReason,
    GenerationDone,
    GenerationEvent,
    GenerationParams,
    GenerationRequest,
    PromptRenderer,
    TextDelta,
)
from .completion_stream import Chunk, CompletionStream, UpstreamError, UpstreamRefused, Usage
from .remote_config import DEFAULT_SLOTS, DEFAULT_TIMEOUT, parse_model_url
from .stopping import StopStringFilter

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger("chatstream")

CONNECT_TIMEOUT = 5.0
READY_TIMEOUT = 2.0
UNAVAILABLE = "the inference server is unavailable; try again shortly"
REFUSED = "the inference server refused this request (its parameters or its length)"


class OpenAICompatibleEngine:
    """Streams replies of ``model`` from the OpenAI-compatible server at ``base_url``
    (``http://host:port/v1``), with ``api_key`` as its Bearer token if given.

    ``slots`` is how many generations this instance streams at once. Its connection pool
    keeps as many open, and one more for readiness checks; it may open twice as many, so that
    connections still reading the last bytes of finished replies never hold up new ones.
    ``timeout`` bounds, in seconds, each wait for the upstream's next bytes, its first token
    included (connecting: at most 5 s).
    ``tokenizer`` (a tokenizer, or the path or Hugging Face id of one on this disk) counts
    tokens exactly with its chat template; without it the counts are a conservative estimate
    (:mod:`~chatstream.engines.estimate`).

    A request's ``messages`` go to the upstream, which renders them with its own chat template
    and ends the reply at its model's end of turn; its stop strings, ``max_new_tokens``,
    ``temperature`` and ``top_p`` go as OpenAI's ``stop``, ``max_tokens``, ``temperature``
    and ``top_p``. ``top_k`` and ``repetition_penalty``, which OpenAI's API lacks, go as the
    vLLM and llama.cpp extensions (``top_k``; ``repetition_penalty`` and llama.cpp's
    ``repeat_penalty``) when they differ from chatstream's defaults: a server that does not
    take them refuses the request, or ignores them. The stop strings are also
    applied here, for servers that ignore ``stop``. The finish reason is the upstream's
    (``length``, else ``stop``), the token counts its usage, or the renderer's when it sends
    none.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        slots: int = DEFAULT_SLOTS,
        tokenizer: PreTrainedTokenizerBase | str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        self._model = model
        self._slots = slots
        self._renderer = _renderer(tokenizer)
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)),
            limits=httpx.Limits(max_connections=2 * slots + 1, max_keepalive_connections=slots + 1),
        )
        self._streams: set[CompletionStream] = set()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> OpenAICompatibleEngine:
        """The engine for a model URL, ``openai+http://host:port/v1#model-name`` (see
        :mod:`~chatstream.engines.remote_config`); ``options`` as the constructor's."""
        base_url, model = parse_model_url(url)
        return cls(base_url, model, **options)

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def renderer(self) -> PromptRenderer:
        return self._renderer

    @property
    def model_name(self) -> str:
        return self._model

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return self._renderer.stop_strings

    continues_replies = False
    """OpenAI's protocol has no portable way to go on from a reply's start (vLLM's
    ``continue_final_message`` and llama.cpp's prefill differ), so ``{"continue": true}`` is
    refused with 422 rather than answered with a new reply."""

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        if self._closed:
            raise RuntimeError("the engine is closed")
        if not request.messages:
            raise ValueError("the remote engine sends a conversation: the request has no messages")
        if request.assistant_prefix:
            raise ValueError("the remote engine cannot continue a reply (continues_replies)")
        stops = StopStringFilter((*request.params.stop, *self.stop_strings))
        received: list[str] = []
        sent = whole = False
        finish_reason: FinishReason | None = None
        usage: Usage | None = None
        stream = CompletionStream(self._client, self._body(request))
        self._streams.add(stream)
        try:
            while not (stops.stopped or whole):
                item = await stream.receive()
                if self._closed:
                    finish_reason = "cancelled"
                    break
                if not isinstance(item, Chunk):  # the end; an error after the finish is moot
                    if finish_reason is None:
                        self._fail(item.error or UpstreamError("the stream ended early"), sent)
                    break
                usage = item.usage or usage
                if item.finish_reason is not None:
                    finish_reason = "length" if item.finish_reason == "length" else "stop"
                if item.last and finish_reason is None:
                    self._fail(UpstreamError("the stream ended early"), sent)
                whole = item.last or (finish_reason is not None and usage is not None)
                if item.text:
                    received.append(item.text)
                    if text := stops.push(item.text):
                        sent = True
                        yield TextDelta(text)
        finally:
            if whole:
                stream.release(lambda: self._streams.discard(stream))
            else:
                self._streams.discard(stream)
                await stream.close()
        if stops.stopped:
            finish_reason = "stop"
        elif finish_reason != "cancelled" and (tail := stops.flush()):
            yield TextDelta(tail)
        assert finish_reason is not None
        if usage is None or finish_reason == "cancelled" or stops.stopped:
            usage = self._count(request.messages, "".join(received))
        yield GenerationDone(
            finish_reason, usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens
        )

    async def check_ready(self) -> None:
        """Raise :class:`~chatstream.errors.UpstreamUnavailable` unless the upstream answers
        ``GET /models`` (what ``/readyz`` asks)."""
        try:
            response = await self._client.get("models", timeout=READY_TIMEOUT)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            logger.warning("the upstream at %s is not ready: %r", self._client.base_url, exc)
            raise UpstreamUnavailable(UNAVAILABLE) from exc

    async def aclose(self) -> None:
        """End running streams (finish ``"cancelled"``) and close the connections."""
        self._closed = True
        await asyncio.gather(*(stream.close() for stream in list(self._streams)))
        await self._client.aclose()

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        params = request.params
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.top_k != GenerationParams.top_k:
            body["top_k"] = params.top_k
        if params.repetition_penalty != GenerationParams.repetition_penalty:
            body["repetition_penalty"] = params.repetition_penalty  # vLLM's name
            body["repeat_penalty"] = params.repetition_penalty  # llama.cpp's
        return body

    def _fail(self, error: BaseException, sent: bool) -> NoReturn:
        """Raise what the consumer gets for ``error``: before any text was sent, the chat-layer
        error that the client is answered with; after, the error itself."""
        if sent or not isinstance(error, UpstreamError):
            raise error
        logger.warning("the upstream at %s failed: %s", self._client.base_url, error)
        if isinstance(error, UpstreamRefused):
            raise InvalidRequest(REFUSED) from error
        raise UpstreamUnavailable(UNAVAILABLE) from error

    def _count(self, messages: Sequence[dict[str, str]], reply: str) -> Usage:
        """The usage the upstream did not report, counted by the renderer."""
        renderer = self._renderer
        return Usage(renderer.count_prompt_tokens(messages), renderer.count_tokens(reply))


def _renderer(tokenizer: PreTrainedTokenizerBase | str | None) -> PromptRenderer:
    """Exact counts with the model's tokenizer, else the estimate."""
    if tokenizer is None:
        from .estimate import EstimatingRenderer

        return EstimatingRenderer()
    from .rendering import ChatTemplateRenderer

    if isinstance(tokenizer, str):
        tokenizer = _load_tokenizer(tokenizer)
    return ChatTemplateRenderer(tokenizer)


def _load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    try:
        loaded: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except OSError as exc:
        from ..model import ModelNotFoundError

        raise ModelNotFoundError(
            f"cannot load the tokenizer {name!r} without downloading it: it is neither a local "
            f"directory nor in the Hugging Face cache ({exc})"
        ) from exc
    return loaded
