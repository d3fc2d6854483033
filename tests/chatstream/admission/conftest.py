"""``store``: each admission test runs on the embedded store and on real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from sessions.embedded import embedded_redis


@pytest.fixture
async def embedded() -> AsyncIterator[Redis]:
    client = embedded_redis()
    yield client
    await client.aclose()


@pytest.fixture(params=["embedded", "real"])
def store(request: pytest.FixtureRequest) -> Redis:
    client: Redis = request.getfixturevalue("real_redis" if request.param == "real" else "embedded")
    return client
