"""The app that ``make run`` / ``chatstream serve`` serves, configured from the environment.

``uvicorn chatstream.app:create_app --factory`` works too.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from sessions import RedisSessionStore, SessionMiddleware

from .chat_stream import ChatStream
from .engines.base import Engine
from .engines.remote_config import is_model_url
from .errors import ChatStreamError, MethodNotAllowed, NotFound
from .http.errors import error_response
from .http.guard import HostGuard
from .http.identity import TrustedUserHeader
from .keys import DEFAULT_PREFIX
from .redis_client import RedisClient, connect_redis
from .settings import ConfigError, Settings

logger = logging.getLogger("chatstream")

MIN_SECRET_BYTES = 32


def create_app(
    settings: Settings | None = None, *, chat_stream: ChatStream | None = None
) -> FastAPI:
    settings = Settings.from_env() if settings is None else settings
    secret_keys = signing_keys(settings)
    access = settings.access
    hosts = settings.host_names
    if hosts == ["*"] and not access.api_keys:
        logger.warning(
            "chatstream is bound to %s with no CHATSTREAM_ALLOWED_HOSTS and no "
            "CHATSTREAM_API_KEYS: any host name reaches it and every route is open. Set them "
            "for anything reachable from other machines.",
            settings.host,
        )
    redis = connect_redis(settings.redis_url)
    if chat_stream is None:
        chat_stream = build_chat_stream(settings, redis)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await chat_stream.warm_up()  # before the server listens: /readyz means warm
        yield
        await chat_stream.aclose()
        await redis.aclose()

    # The interactive docs load their scripts from a CDN, next to users' cookies: off unless
    # asked for.
    docs = {} if settings.docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="chatstream", lifespan=lifespan, **docs)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_middleware(
        SessionMiddleware,
        store=RedisSessionStore(redis, prefix=DEFAULT_PREFIX),
        secret_key=secret_keys,
        cookie_name=settings.cookie_name,
        autoload=False,  # loaded by the routes that use it: probes and assets cost nothing
    )
    app.add_middleware(HostGuard, allowed_hosts=hosts)
    # The client address and scheme from X-Forwarded-For/-Proto, from trusted proxies only
    # (uvicorn's own proxy headers are off in chatstream serve: the user header must see the
    # peer's address before this rewrites it).
    trusted = settings.trusted_proxies
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=trusted)
    if settings.trusted_user_header:
        app.add_middleware(TrustedUserHeader, header=settings.trusted_user_header, trusted=trusted)
    app.state.chat_stream = chat_stream
    chat_stream.mount(app)
    return app


def signing_keys(settings: Settings) -> list[str]:
    """The cookie signing keys, newest first; a random one for this process when none is set
    and the store is in-process. Keys shared through Redis must be long enough to resist
    guessing (:data:`MIN_SECRET_BYTES`)."""
    keys = settings.secret_keys
    if settings.redis_url:
        if not keys:
            raise ConfigError(
                "REDIS_URL is set but CHATSTREAM_SECRET_KEY is not: instances sharing Redis "
                "must share the cookie signing key, or they cannot read each other's sessions"
            )
        if any(len(key.encode()) < MIN_SECRET_BYTES for key in keys):
            raise ConfigError(
                f"CHATSTREAM_SECRET_KEY: each key must be at least {MIN_SECRET_BYTES} bytes "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
    if keys:
        return keys
    logger.warning(
        "CHATSTREAM_SECRET_KEY is not set: using a random key for this process only. "
        "Sessions will not survive a restart. Set it for anything but local development."
    )
    return [secrets.token_urlsafe(32)]


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405 (no such route, wrong method) in chatstream's JSON shape."""
    assert isinstance(exc, StarletteHTTPException)
    error = {404: NotFound("no such route"), 405: MethodNotAllowed("method not allowed here")}
    return error_response(error.get(exc.status_code, ChatStreamError(str(exc.detail))))


def build_chat_stream(settings: Settings, redis: RedisClient) -> ChatStream:
    """The ChatStream the settings describe: an ``openai+http(s)://`` model's remote engine, or
    the model (or the mock) that ``ChatStream.from_pretrained`` loads."""
    build: Callable[..., ChatStream] = functools.partial(
        ChatStream.from_pretrained,
        settings.model,
        mock_token_delay=settings.mock_token_delay,
        cache_dir=settings.cache_dir,
        dtype=settings.dtype,
        device=settings.device,
    )
    if is_model_url(settings.model):
        build = functools.partial(ChatStream, engine=remote_engine(settings))
    return build(
        redis=redis,
        context_len=settings.context_len,
        max_new_tokens=settings.max_new_tokens,
        max_concurrent=settings.max_concurrent,
        max_queue=settings.max_queue,
        queue_timeout=settings.queue_timeout,
        lease_ttl=settings.lease_ttl,
        max_per_client=settings.max_per_client,
        rate_limit=settings.rate_limit,
        api_keys=settings.access.api_keys,
        api_keys_scope=settings.access.api_keys_scope,
        allowed_origins=settings.access.allowed_origins,
        max_new_tokens_limit=settings.max_new_tokens_limit,
        detach_grace=settings.detach_grace,
        reply_ttl=settings.reply_ttl,
        record_replies=settings.record_replies,
        slots=settings.slots,
        prefill_tokens=settings.prefill_tokens,
        prefix_cache_mb=settings.prefix_cache_mb,
    )


def remote_engine(settings: Settings) -> Engine:
    """The engine of an ``openai+http(s)://`` model; it loads no model of its own (a tokenizer
    that cannot be loaded is a :class:`ConfigError`)."""
    from .engines.remote import OpenAICompatibleEngine

    try:
        return OpenAICompatibleEngine.from_url(
            str(settings.model),
            api_key=settings.upstream_api_key,
            slots=settings.upstream_slots,
            tokenizer=settings.tokenizer,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
