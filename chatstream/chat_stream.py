"""ChatStream: the object a FastAPI app holds, and its one-call request handler.

Why one module: ChatStream is the one object users configure, and its constructor takes every
setting by name (the README's list), which is most of its length.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import Response

from sessions import Session

from .admission.base import Admission
from .chat.feedback import FeedbackHook
from .chat.outcome import CompletionCallback
from .chat.params import GenerationSettings
from .chat.services import Services, ServiceTimes
from .config import (
    AccessConfig,
    AdmissionConfig,
    ConversationLimits,
    ReplyConfig,
    RequestLimits,
)
from .conversations.access import ConversationAccess, ConversationPolicy
from .conversations.owners import OwnerRule, signed_in_user
from .conversations.prompt import ChatPrompt
from .conversations.redis_store import RedisConversationStore
from .conversations.store import ConversationStore
from .engines.base import Engine, GenerationParams, GenerationRequest
from .engines.config import BatchingConfig, ModelPlacement
from .errors import ServiceUnavailable
from .http.chat import chat_stream_endpoint
from .http.routes import build_router
from .keys import GENERATION_PARAMS, READY_PROBE
from .metrics import Metrics
from .redis_client import REDIS_ERRORS, RedisClient
from .replies.running import Replies
from .replies.store import ReplyStore


class ChatStream:
    """Serves one model as a multi-turn chat: ``await handle_chat_stream_request(request)``.

    Give it a transformers ``model`` and ``tokenizer``, or any :class:`Engine`. Sampling
    defaults apply to every turn unless the session set its own (``/set_generation_params``).
    Admission (the cluster-wide limit and fair queue) lives in the Redis that the session
    store uses, unless ``redis`` or ``admission`` is given. ``api_keys``, ``api_keys_scope`` and
    ``allowed_origins`` say who may call the routes (:class:`~chatstream.config.AccessConfig`).
    Every default is the one of :mod:`chatstream.config` (and ``GenerationParams`` for
    sampling).
    """

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        *,
        engine: Engine | None = None,
        admission: Admission | None = None,
        redis: RedisClient | None = None,
        system_prompt: str | None = None,
        chat_template: str | None = None,
        context_len: int | None = None,
        max_new_tokens: int = GenerationParams.max_new_tokens,
        temperature: float = GenerationParams.temperature,
        top_p: float = GenerationParams.top_p,
        top_k: int = GenerationParams.top_k,
        repetition_penalty: float = GenerationParams.repetition_penalty,
        stop: tuple[str, ...] = (),
        max_input_chars: int = RequestLimits.max_input_chars,
        max_body_bytes: int = RequestLimits.max_body_bytes,
        max_concurrent: int | None = AdmissionConfig.max_concurrent,
        max_queue: int = AdmissionConfig.max_queue,
        queue_timeout: float = AdmissionConfig.queue_timeout,
        lease_ttl: float = AdmissionConfig.lease_ttl,
        max_per_client: int = AdmissionConfig.max_per_client,
        rate_limit: int = AdmissionConfig.rate_limit,
        owner: OwnerRule | None = None,
        conversation_store: ConversationStore | None = None,
        detach_grace: float = ReplyConfig.detach_grace,
        reply_ttl: float = ReplyConfig.reply_ttl,
        record_replies: bool = ReplyConfig.record,
        max_conversations: int = ConversationLimits.max_conversations,
        on_feedback: FeedbackHook | None = None,
        api_keys: Sequence[str] = AccessConfig.api_keys,
        api_keys_scope: Literal["v1", "all"] = AccessConfig.api_keys_scope,
        allowed_origins: Sequence[str] = AccessConfig.allowed_origins,
        max_new_tokens_limit: int = RequestLimits.max_new_tokens_limit,
        max_messages: int = ConversationLimits.max_messages,
        max_conversation_bytes: int = ConversationLimits.max_conversation_bytes,
        slots: int = BatchingConfig.slots,
        prefill_tokens: int = BatchingConfig.prefill_tokens,
        prefix_cache_mb: float = BatchingConfig.prefix_cache_mb,
    ) -> None:
        if engine is None:
            if model is None or tokenizer is None:
                raise TypeError("ChatStream needs model= and tokenizer=, or engine=")
            from .engines.default import default_engine

            engine = default_engine(
                model,
                tokenizer,
                chat_template,
                slots=slots,
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
        self.limits = RequestLimits(
            max_input_chars=max_input_chars,
            max_body_bytes=max_body_bytes,
            max_new_tokens_limit=max_new_tokens_limit,
        )
        if max_new_tokens > max_new_tokens_limit:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} is over the limit of {max_new_tokens_limit}"
            )
        self.admission_config = AdmissionConfig(
            max_concurrent=max_concurrent,
            max_queue=max_queue,
            queue_timeout=queue_timeout,
            lease_ttl=lease_ttl,
            max_per_client=max_per_client,
            rate_limit=rate_limit,
        )
        self.conversation_limits = ConversationLimits(
            max_messages=max_messages,
            max_conversation_bytes=max_conversation_bytes,
            max_conversations=max_conversations,
        )
        self.on_feedback = on_feedback
        self.access = AccessConfig(
            api_keys=tuple(api_keys),
            api_keys_scope=api_keys_scope,
            allowed_origins=tuple(allowed_origins),
        )
        self.metrics = Metrics()
        self._admission = admission
        self._redis = redis
        self._services: Services | None = None
        self._reply_store: ReplyStore | None = None
        self.replies = Replies()
        self.reply_config = ReplyConfig(
            detach_grace=detach_grace, reply_ttl=reply_ttl, record=record_replies
        )
        self._conversation_store = conversation_store
        self._policy: ConversationPolicy | None = None
        self.owner_rule: OwnerRule = owner or signed_in_user

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | None = None,
        *,
        mock_token_delay: float = 0.02,
        cache_dir: str | None = None,
        dtype: str = ModelPlacement.dtype,
        device: str | None = ModelPlacement.device,
        **kwargs: Any,
    ) -> ChatStream:
        """Load a model: a Hugging Face id or local path, ``None`` for the bundled
        SmolLM2-135M-Instruct (its safetensors cache in ``cache_dir``), or ``"mock"`` for the
        mock engine, as ``dtype`` on ``device`` (:func:`~chatstream.model.load_model`).
        Nothing is downloaded."""
        if name_or_path == "mock":
            from .engines.mock import MockEngine

            return cls(engine=MockEngine(token_delay=mock_token_delay), **kwargs)
        from pathlib import Path

        from .model import load_model

        model, tokenizer = load_model(
            name_or_path,
            cache_dir=Path(cache_dir).expanduser() if cache_dir else None,
            dtype=dtype,
            device=device,
        )
        return cls(model, tokenizer, **kwargs)

    # -- the handler ---------------------------------------------------------------------------

    async def handle_chat_stream_request(
        self,
        request: Request,
        request_body: bytes | None = None,
        callback: CompletionCallback | None = None,
    ) -> Response:
        """Answer ``POST /chat_stream``: a streamed reply, or a JSON error (see DESIGN.md)."""
        return await chat_stream_endpoint(self, request, request_body, callback)

    def generation_request(
        self,
        history: ChatPrompt,
        settings: GenerationSettings,
        *,
        request_id: str,
        stop: Sequence[str] = (),
        assistant_prefix: str = "",
    ) -> GenerationRequest:
        """Ask for the next reply of ``history`` (going on from ``assistant_prefix``, a reply
        being continued): its oldest turns dropped to fit the context with room for the reply
        (413 when even the last turn does not), rendered, with this chat's stop strings and
        ``stop`` added."""
        renderer = self.engine.renderer
        reply_room = settings.max_new_tokens
        if assistant_prefix:
            reply_room += renderer.count_tokens(assistant_prefix)
        history.bind(renderer, context_len=self.context_len, max_new_tokens=reply_room)
        messages = history.fitted_messages()
        return GenerationRequest(
            prompt=renderer.render(messages, add_generation_prompt=True) + assistant_prefix,
            params=replace(settings.to_params(), stop=(*self.stop, *stop)),
            messages=messages,
            request_id=request_id,
            assistant_prefix=assistant_prefix,
        )

    # -- conversations and session state ---------------------------------------------------------

    def bind(self, prompt: ChatPrompt) -> ChatPrompt:
        """``prompt`` with this chat's renderer and limits, so ``create_prompt()`` works."""
        return prompt.bind(
            self.engine.renderer,
            context_len=self.context_len,
            max_new_tokens=self.defaults.max_new_tokens,
        )

    def conversations(self, request: Request) -> ConversationAccess:
        """The conversations of ``request``'s owner (its session loaded); one access per
        request, so that what it does once (a migration, a sign-in) happens once."""
        cached = request.scope.setdefault("chatstream.conversations", {})
        if id(self) in cached:
            access: ConversationAccess = cached[id(self)]
            return access
        session = request.state.session
        if self._policy is None:
            store = self._conversation_store
            if store is None:
                idle = getattr(session.store, "idle_timeout", None)
                ttl = {} if idle is None else {"anonymous_ttl": idle}
                store = RedisConversationStore(self.redis_for(session), **ttl)
            self._policy = ConversationPolicy(
                store, self.owner_rule, self.conversation_limits, self.system_prompt, self.bind
            )
        access = cached[id(self)] = ConversationAccess(self._policy, request, session)
        return access

    def generation_settings(self, session: Session) -> GenerationSettings:
        """This chat's defaults, overridden by what the session set (within today's limits)."""
        stored = session.get_session().get(GENERATION_PARAMS)
        if isinstance(stored, Mapping):
            return self.defaults.merged(
                stored, max_new_tokens_limit=self.limits.max_new_tokens_limit
            )
        return self.defaults

    def admission_for(self, session: Session | None) -> Admission:
        """The admission semaphore, created on first use in :meth:`redis_for` ``session``."""
        if self._admission is None:
            from .admission.semaphore import RedisSemaphore

            config = self.admission_config
            self._admission = RedisSemaphore(
                self.redis_for(session),
                capacity=config.max_concurrent or self.engine.slots,
                local_slots=self.engine.slots,
                max_queue=config.max_queue,
                queue_timeout=config.queue_timeout,
                lease_ttl=config.lease_ttl,
                max_per_client=config.max_per_client or None,
            )
        return self._admission

    def services(self, session: Session | None) -> Services:
        """What a generation run of this chat uses (created on first use)."""
        if self._services is None:
            from .admission.rate_limit import RedisRateLimiter

            limit = self.admission_config.rate_limit
            admission = self.admission_for(session)
            self._services = Services(
                self.engine,
                admission,
                self.metrics,
                RedisRateLimiter(self.redis_for(session), per_minute=limit) if limit else None,
                ServiceTimes(self.admission_config.max_concurrent or self.engine.slots),
            )
        return self._services

    def reply_store(self, session: Session | None) -> ReplyStore:
        """Where replies are recorded (created on first use, in :meth:`redis_for`)."""
        if self._reply_store is None:
            self._reply_store = ReplyStore(self.redis_for(session))
        return self._reply_store

    def redis_for(self, session: Session | None) -> RedisClient:
        """Where chatstream keeps its shared state: the Redis given to this ChatStream, else the
        session store's (the embedded store when there is neither)."""
        if self._redis is None:
            redis = getattr(getattr(session, "store", None), "redis", None)
            if redis is None:
                from sessions.embedded import embedded_redis

                redis = embedded_redis()
            self._redis = redis
        return self._redis

    async def warm_up(self) -> None:
        """Run the engine's ``warm_up()``, if it has one, so that the first request is as fast
        as the next ones. ``chatstream serve`` (:func:`~chatstream.app.create_app`) awaits it
        at startup, before it listens; an app that mounts this ChatStream itself should await
        it in its lifespan."""
        warm_up = getattr(self.engine, "warm_up", None)
        if warm_up is not None:
            await warm_up()

    async def check_ready(self, session: Session) -> None:
        """Raise unless the session store answers, chatstream's Redis takes writes (a
        read-only replica, a failed cluster or a failover in progress is not ready) and the
        engine, if it has a ``check_ready``, is ready."""
        await session.store.ping()
        try:
            await self.redis_for(session).set(READY_PROBE, "1", px=10_000)
        except REDIS_ERRORS as exc:
            raise ServiceUnavailable("Redis does not take writes") from exc
        engine_ready = getattr(self.engine, "check_ready", None)  # a remote engine's upstream
        if engine_ready is not None:
            await engine_ready()

    @functools.cached_property
    def router(self) -> APIRouter:
        """Every route of the chat service (see the README's API reference)."""
        return build_router(self)

    def mount(self, app: FastAPI) -> None:
        """Add :attr:`router` to ``app``."""
        app.include_router(self.router)

    async def aclose(self) -> None:
        await self.replies.aclose()
        if self._admission is not None:
            await self._admission.aclose()
        await self.engine.aclose()
