"""What redis-py raises when Redis is away, read-only or in a failover, on one server, behind
Sentinel and on a cluster, and a client that raises any of it on demand: for the tests that
every store turns each into its "unavailable" error."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    MasterDownError,
    MovedError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

OUTAGES: list[Exception] = [
    RedisConnectionError("Connection refused"),
    RedisTimeoutError("Timeout reading from socket"),
    BusyLoadingError("Redis is loading the dataset in memory"),
    ReadOnlyError("You can't write against a read only replica."),
    ResponseError("NOREPLICAS Not enough good replicas to write."),  # min-replicas-to-write
    MasterNotFoundError("No master found for 'chatstream'"),
    MovedError("3999 10.0.0.7:6381"),
    AskError("3999 10.0.0.7:6381"),
    TryAgainError("Multiple keys request during rehashing of slot"),
    ClusterDownError("The cluster is down"),
    MasterDownError("Link with MASTER is down and replica-serve-stale-data is set to 'no'."),
    ClusterError("TTL exhausted."),  # redirections that never settled
    SlotNotCoveredError("Slot 3999 is not covered by the cluster."),  # not a RedisError
    RedisClusterException("Redis Cluster cannot be connected."),  # not a RedisError
]


def error_id(error: Exception) -> str:
    return type(error).__name__


class Breakable:
    """A client whose every command raises ``error`` once it is set."""

    def __init__(self, redis: Redis | RedisCluster, monkeypatch: pytest.MonkeyPatch) -> None:
        self.redis = redis
        self.error: Exception | None = None
        execute: Callable[..., Awaitable[Any]] = redis.execute_command

        async def execute_command(*args: Any, **options: Any) -> Any:
            if self.error is not None:
                raise self.error
            return await execute(*args, **options)

        monkeypatch.setattr(redis, "execute_command", execute_command)
