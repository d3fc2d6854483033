"""Fixtures for the reliability and security suites: real Redis servers, shared or private."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis as sync_redis


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[sync_redis.Redis]:
    """A client of the real Redis the servers under test share; flushed before and after."""
    client = sync_redis.Redis.from_url(redis_url, socket_timeout=5)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()
