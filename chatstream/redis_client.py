"""The Redis client that ``chatstream serve`` connects with, from ``REDIS_URL``:

    redis://[user:password@]host:port/db                        one server (rediss://, unix://)
    redis+cluster://[user:password@]host:port,host:port         a Redis Cluster, from its nodes
    redis+sentinel://[user:password@]host:port,host:port/name   the master Sentinel names ``name``

Credentials are the data nodes' (the sentinels are asked without). Every client has bounded
socket timeouts (:data:`REDIS_TIMEOUT`) and one retry policy: a command that fails on a broken
connection is sent once more, at once, on a new one. After a Redis restart or a failover every
pooled connection is dead, and without this the first command on each would fail; a cluster
reads its layout again before the retry, a Sentinel client asks the sentinels for the master.
While Redis is down the second try fails as fast as the first (connection refused), and a
timeout is never retried, so an outage still answers within one timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from sessions.embedded import embedded_redis

from .errors import ServiceUnavailable
from .settings import ConfigError

RedisClient: TypeAlias = Redis | RedisCluster
"""What chatstream keeps its shared state in: one server (or a Sentinel's master) or a cluster."""

REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException)
"""Every error a Redis client raises: redis-py's cluster errors (no node reachable, a slot not
covered) are outside :class:`~redis.exceptions.RedisError`."""

logger = logging.getLogger("chatstream")


@contextmanager
def unavailable_on_error(store: str, message: str) -> Iterator[None]:
    """A Redis error inside is logged (``store`` names what failed; the detail stays in the
    log) and raised as :class:`~chatstream.errors.ServiceUnavailable` with ``message``, the
    fixed text the client sees."""
    try:
        yield
    except REDIS_ERRORS as exc:
        logger.warning("%s: %r", store, exc)
        raise ServiceUnavailable(message) from exc


def text(value: bytes | str) -> str:
    """A Redis reply as text (clients may or may not decode their replies)."""
    return value.decode() if isinstance(value, bytes) else value


REDIS_TIMEOUT = 2.0
"""Seconds to connect, and to wait for any reply."""
REDIS_MAX_CONNECTIONS = 1000
"""Connections a client opens at most (to each node of a cluster). redis-py's default, 100, is
reached by some 50 streams on a busy instance (each of their commands holds a connection until
the event loop reads its reply), and past it every command fails at once: a 503 under load that
the server could have carried. This matches the server's own bound on open HTTP connections."""

CLUSTER, SENTINEL = "redis+cluster", "redis+sentinel"
SCHEMES = ("redis", "rediss", "unix", CLUSTER, SENTINEL)
DEFAULT_PORTS = {CLUSTER: 6379, SENTINEL: 26379}


def connect_redis(url: str | None) -> RedisClient:
    """A client for ``url`` (see the module docstring), or the embedded in-process store when
    ``url`` is ``None``. Nothing connects yet; a URL that cannot be used raises
    :class:`~chatstream.settings.ConfigError` (without echoing it: it may hold a password)."""
    if url is None:
        return embedded_redis()
    scheme = url.partition("://")[0]
    if scheme not in SCHEMES:
        raise ConfigError(f"REDIS_URL must start with {', '.join(s + '://' for s in SCHEMES)}")
    try:
        if scheme == CLUSTER:
            return _cluster(url)
        if scheme == SENTINEL:
            return _sentinel(url)
        client: Redis = Redis.from_url(url, **_options())
    except ValueError as exc:  # redis-py's own URL errors, and ours
        raise ConfigError(f"REDIS_URL: {exc}") from None
    return client


class _Cluster(RedisCluster):
    """redis-py's cluster client, retrying what a single server's client retries: a broken
    connection, and a cluster that is down or has a slot uncovered (mid-failover), each after
    reading the layout again; not a timeout. (Redirections, ``MOVED`` and ``ASK``, are followed
    by redis-py without counting as retries.)"""

    ERRORS_ALLOW_RETRY = (RedisConnectionError, ClusterDownError, SlotNotCoveredError)  # type: ignore[assignment]


class _SentinelMaster(Redis):
    """The client of the master a Sentinel names; closing it closes the sentinels' too."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        sentinels = self.connection_pool.sentinel_manager.sentinels  # type: ignore[attr-defined]
        await super().aclose(close_connection_pool)
        for sentinel in sentinels:
            await sentinel.aclose()


def _cluster(url: str) -> RedisCluster:
    nodes, path, options = _parse(url)
    if path not in ("", "/", "/0"):
        raise ValueError("a cluster has only database 0")
    startup = [ClusterNode(host, port) for host, port in nodes]
    return _Cluster(startup_nodes=startup, **options)


def _sentinel(url: str) -> Redis:
    nodes, path, options = _parse(url)
    service = path.removeprefix("/")
    if not service or "/" in service:
        raise ValueError("give the master's name as the path: redis+sentinel://host:port/name")
    sentinel = Sentinel(nodes, sentinel_kwargs=_options(), **options)  # type: ignore[no-untyped-call]
    master: Redis = sentinel.master_for(service, redis_class=_SentinelMaster)
    return master


def _parse(url: str) -> tuple[list[tuple[str, int]], str, dict[str, Any]]:
    """``(nodes, path, client options)`` of a URL that lists nodes as ``host:port,host:port``;
    the options carry its credentials."""
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ValueError(f"{parts.scheme}:// URLs take no options (?...) or fragment (#...)")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    nodes = [_node(item, DEFAULT_PORTS[parts.scheme]) for item in hosts.split(",")]
    credentials = {"username": unquote(username) or None, "password": unquote(password) or None}
    return nodes, parts.path, {**credentials, **_options()}


def _node(item: str, default_port: int) -> tuple[str, int]:
    host, colon, port = item.rpartition(":") if not item.endswith("]") else ("", "", "")
    if not colon:
        host, port = item, str(default_port)
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a host:port: {item!r}")
    return host, int(port)


def _options() -> dict[str, Any]:
    # A function: redis-py updates a Retry's errors in place, so no two clients share one.
    return {
        "socket_timeout": REDIS_TIMEOUT,
        "socket_connect_timeout": REDIS_TIMEOUT,
        "max_connections": REDIS_MAX_CONNECTIONS,
        "health_check_interval": 15,
        "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    }
