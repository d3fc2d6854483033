"""The app that ``make run`` / ``chatstream serve`` serves, configured from the environment.

``uvicorn chatstream.app:create_app --factory`` works too.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from sessions import RedisSessionStore, SessionMiddleware
from sessions.embedded import embedded_redis

from .chat_stream import ChatStream
from .keys import DEFAULT_PREFIX
from .settings import ConfigError, Settings

logger = logging.getLogger("chatstream")

REDIS_TIMEOUT = 2.0


def create_app(
    settings: Settings | None = None, *, chat_stream: ChatStream | None = None
) -> FastAPI:
    settings = Settings.from_env() if settings is None else settings
    secret_keys = settings.secret_keys
    if not secret_keys:
        if settings.redis_url:
            raise ConfigError(
                "REDIS_URL is set but CHATSTREAM_SECRET_KEY is not: instances sharing Redis "
                "must share the cookie signing key, or they cannot read each other's sessions"
            )
        logger.warning(
            "CHATSTREAM_SECRET_KEY is not set: using a random key for this process only. "
            "Sessions will not survive a restart. Set it for anything but local development."
        )
        secret_keys = [secrets.token_urlsafe(32)]
    redis = connect_redis(settings.redis_url)
    if chat_stream is None:
        chat_stream = build_chat_stream(settings, redis)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await chat_stream.aclose()
        await redis.aclose()

    app = FastAPI(title="chatstream", lifespan=lifespan)
    app.add_middleware(
        SessionMiddleware,
        store=RedisSessionStore(redis, prefix=DEFAULT_PREFIX),
        secret_key=secret_keys,
        cookie_name=settings.cookie_name,
    )
    app.state.chat_stream = chat_stream
    chat_stream.mount(app)
    return app


def connect_redis(url: str | None) -> Redis:
    """A client for ``url`` with bounded timeouts, or the embedded in-process store.

    A command that fails on a broken connection is sent once more, at once, on a new one: after
    a Redis restart every pooled connection is dead, and without this the first command on
    each would fail. While Redis is down the second try fails as fast as the first (connection
    refused), and a timeout is never retried, so an outage still answers within one timeout.
    """
    if url is None:
        return embedded_redis()
    client: Redis = Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        health_check_interval=15,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
    return client


def build_chat_stream(settings: Settings, redis: Redis) -> ChatStream:
    return ChatStream.from_pretrained(
        settings.model,
        mock_token_delay=settings.mock_token_delay,
        cache_dir=settings.cache_dir,
        redis=redis,
        max_new_tokens=settings.max_new_tokens,
        max_concurrent=settings.max_concurrent,
        max_queue=settings.max_queue,
        queue_timeout=settings.queue_timeout,
        lease_ttl=settings.lease_ttl,
        api_keys=settings.api_key_list,
        prefill_tokens=settings.prefill_tokens,
        prefix_cache_mb=settings.prefix_cache_mb,
    )
