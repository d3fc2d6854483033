"""Fixtures for the reliability and security suites: real Redis servers, shared or private."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as sync_redis

from tests.servers import RedisProcess


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[sync_redis.Redis]:
    """A client of the real Redis the servers under test share; flushed before and after."""
    client = sync_redis.Redis.from_url(redis_url, socket_timeout=5)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test's own, without persistence, for the test to kill."""
    server = redis_process(tmp_path)
    server.start()
    yield server
    server.kill()


def redis_process(directory: Path, *, persistent: bool = False) -> RedisProcess:
    if shutil.which("redis-server") is None:
        message = "this test needs redis-server on PATH"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return RedisProcess(str(directory), persistent=persistent)
