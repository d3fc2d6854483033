"""ChatStream: the object a FastAPI app holds, and its one-call request handler."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, FastAPI
from redis.asyncio import Redis
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from sessions import Session

from .admission.base import Admission
from .body import parse_json, read_body, validate_chat_body
from .engines.base import Engine, GenerationRequest
from .engines.config import BatchingConfig
from .errors import ChatStreamError
from .feedback import FeedbackHook
from .metrics import Metrics
from .outcome import CompletionCallback, Outcome, run_callback
from .params import SESSION_PARAMS_KEY, GenerationSettings
from .prompt import ChatPrompt
from .streaming import EventStreamWriter, TextStreamWriter, wants_event_stream
from .turn import SESSION_KEY, ChatTurn, ChatTurnResponse


class ChatStream:
    """Serves one model as a multi-turn chat: ``await handle_chat_stream_request(request)``.

    Give it a transformers ``model`` and ``tokenizer``, or any :class:`Engine`. Sampling
    defaults apply to every turn unless the session set its own (``/set_generation_params``).
    Admission (the cluster-wide limit and fair queue) lives in the Redis that the session
    store uses, unless ``redis`` or ``admission`` is given. ``api_keys``, when given, are the
    Bearer tokens the OpenAI-compatible routes (``/v1/...``) require.
    """

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        *,
        engine: Engine | None = None,
        admission: Admission | None = None,
        redis: Redis | None = None,
        system_prompt: str | None = None,
        chat_template: str | None = None,
        context_len: int | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 0.9,
        top_k: int = 50,
        repetition_penalty: float = 1.0,
        stop: tuple[str, ...] = (),
        max_input_chars: int = 16_000,
        max_body_bytes: int = 256 * 1024,
        max_concurrent: int | None = None,
        max_queue: int = 64,
        queue_timeout: float = 60.0,
        lease_ttl: float = 15.0,
        on_feedback: FeedbackHook | None = None,
        api_keys: Sequence[str] = (),
        prefill_tokens: int = BatchingConfig.prefill_tokens,
        prefix_cache_mb: float = BatchingConfig.prefix_cache_mb,
    ) -> None:
        if engine is None:
            if model is None or tokenizer is None:
                raise TypeError("ChatStream needs model= and tokenizer=, or engine=")
            engine = default_engine(
                model,
                tokenizer,
                chat_template,
                prefill_tokens=prefill_tokens,
                prefix_cache_mb=prefix_cache_mb,
            )
            if context_len is None:
                context_len = getattr(model.config, "max_position_embeddings", None)
        self.engine = engine
        self.system_prompt = system_prompt
        self.context_len = context_len
        self.defaults = GenerationSettings(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            repetition_penalty=repetition_penalty,
        )
        self.stop = stop
        self.max_input_chars = max_input_chars
        self.max_body_bytes = max_body_bytes
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.lease_ttl = lease_ttl
        self.on_feedback = on_feedback
        if any(not key for key in api_keys):
            raise ValueError("an API key must not be empty")
        self.api_keys = tuple(api_keys)
        self.metrics = Metrics()
        self._admission = admission
        self._redis = redis

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | None = None, *, mock_token_delay: float = 0.02, **kwargs: Any
    ) -> ChatStream:
        """Load a model: a Hugging Face id or local path, ``None`` for the bundled
        SmolLM2-135M-Instruct, or ``"mock"`` for the mock engine. Nothing is downloaded."""
        if name_or_path == "mock":
            from .engines.mock import MockEngine

            return cls(engine=MockEngine(token_delay=mock_token_delay), **kwargs)
        from .model import load_model

        model, tokenizer = load_model(name_or_path)
        return cls(model, tokenizer, **kwargs)

    # -- the handler ---------------------------------------------------------------------------

    async def handle_chat_stream_request(
        self,
        request: Request,
        request_body: bytes | None = None,
        callback: CompletionCallback | None = None,
    ) -> Response:
        """Answer ``POST /chat_stream``: a streamed reply, or a JSON error (see DESIGN.md)."""
        try:
            if request_body is None:
                request_body = await read_body(request, self.max_body_bytes)
            data = parse_json(request_body)
        except ChatStreamError as exc:
            return exc.to_response()
        try:
            body = validate_chat_body(data, max_input_chars=self.max_input_chars)
            session: Session = request.state.session
            history = self.load_history(session).copy()
            if body.regenerate:
                history.drop_last_reply()
            else:
                assert body.user_input is not None
                history.add_user_message(body.user_input)
            message_id = uuid.uuid4().hex
            generation = self.generation_request(
                history, self.generation_settings(session), request_id=message_id
            )
        except ChatStreamError as exc:
            # The body parsed, so the callback hears of the refusal, after the response.
            response = exc.to_response()
            response.background = BackgroundTask(run_callback, callback, request, Outcome.REJECTED)
            return response
        turn = ChatTurn(request, session, history, generation, message_id, callback)
        accept = request.headers.get("accept", "")
        writer = EventStreamWriter if wants_event_stream(accept) else TextStreamWriter
        return ChatTurnResponse(
            turn,
            engine=self.engine,
            admission=self.admission_for(session),
            lease_ttl=self.lease_ttl,
            metrics=self.metrics,
            writer=functools.partial(writer, message_id=message_id),
        )

    def generation_request(
        self,
        history: ChatPrompt,
        settings: GenerationSettings,
        *,
        request_id: str,
        stop: Sequence[str] = (),
    ) -> GenerationRequest:
        """Ask for the next reply of ``history``: its oldest turns dropped to fit the context
        (413 when even the last turn does not), rendered, with this chat's stop strings and
        ``stop`` added."""
        history.bind(
            self.engine.renderer,
            context_len=self.context_len,
            max_new_tokens=settings.max_new_tokens,
        )
        messages = history.fitted_messages()
        return GenerationRequest(
            prompt=self.engine.renderer.render(messages, add_generation_prompt=True),
            params=replace(settings.to_params(), stop=(*self.stop, *stop)),
            messages=messages,
            request_id=request_id,
        )

    # -- session state -------------------------------------------------------------------------

    def load_history(self, session: Session) -> ChatPrompt:
        """The session's conversation (a new one with the system prompt if it has none)."""
        history = session.get_session().get(SESSION_KEY)
        if not isinstance(history, ChatPrompt):
            history = ChatPrompt(self.system_prompt)
        return history.bind(
            self.engine.renderer,
            context_len=self.context_len,
            max_new_tokens=self.defaults.max_new_tokens,
        )

    def generation_settings(self, session: Session) -> GenerationSettings:
        """This chat's defaults, overridden by what the session set."""
        stored = session.get_session().get(SESSION_PARAMS_KEY)
        if isinstance(stored, Mapping):
            return self.defaults.merged(stored)
        return self.defaults

    def admission_for(self, session: Session | None) -> Admission:
        """The admission semaphore, created on first use in the Redis given to this ChatStream,
        else the session store's (the embedded store when there is neither)."""
        if self._admission is None:
            from .admission.semaphore import RedisSemaphore

            redis = self._redis or getattr(getattr(session, "store", None), "redis", None)
            if redis is None:
                from sessions.embedded import embedded_redis

                redis = embedded_redis()
            self._admission = RedisSemaphore(
                redis,
                capacity=self.max_concurrent or self.engine.slots,
                local_slots=self.engine.slots,
                max_queue=self.max_queue,
                queue_timeout=self.queue_timeout,
                lease_ttl=self.lease_ttl,
            )
        return self._admission

    @functools.cached_property
    def router(self) -> APIRouter:
        """Every route of the chat service (see the README's API reference)."""
        from .routes import build_router

        return build_router(self)

    def mount(self, app: FastAPI) -> None:
        """Add :attr:`router` to ``app``."""
        app.include_router(self.router)

    async def aclose(self) -> None:
        if self._admission is not None:
            await self._admission.aclose()
        await self.engine.aclose()


def default_engine(
    model: Any,
    tokenizer: Any,
    chat_template: str | None,
    *,
    prefill_tokens: int = BatchingConfig.prefill_tokens,
    prefix_cache_mb: float = BatchingConfig.prefix_cache_mb,
) -> Engine:
    """Continuous batching (``BatchedEngine``, 8 slots) where the model allows it, else one
    ``generate`` at a time (``TransformersEngine``, e.g. for sliding-window attention)."""
    from .engines.batched import BatchedEngine
    from .engines.hf import TransformersEngine
    from .engines.rendering import ChatTemplateRenderer

    renderer = ChatTemplateRenderer(tokenizer, chat_template)
    if not BatchedEngine.can_batch(model):
        return TransformersEngine(model, tokenizer, renderer=renderer)
    return BatchedEngine(
        model,
        tokenizer,
        renderer=renderer,
        prefill_tokens=prefill_tokens,
        prefix_cache_mb=prefix_cache_mb,
    )
