from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from sessions import RedisSessionStore

from .app import client_for, make_app, unused_port


@pytest.fixture
def store(redis: Redis) -> RedisSessionStore:
    return RedisSessionStore(redis)


@pytest.fixture
async def client(store: RedisSessionStore) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(make_app(store)) as client:
        yield client


@pytest.fixture
def unreachable_redis() -> Redis:
    """A client for a port nobody listens on, with the short timeouts apps should set."""
    return Redis(
        host="127.0.0.1",
        port=unused_port(),
        socket_connect_timeout=0.5,
        socket_timeout=0.5,
        retry=Retry(NoBackoff(), retries=0),
    )
