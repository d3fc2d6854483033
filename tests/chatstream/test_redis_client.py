"""``REDIS_URL`` to a client: one server, a Redis Cluster or a Sentinel's master, each with
bounded timeouts and one retry on a broken connection; a URL that cannot be used is a clear
``ConfigError`` at start (the served topologies are in ``tests/reliability``)."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chatstream.cli import main
from chatstream.redis_client import REDIS_MAX_CONNECTIONS, REDIS_TIMEOUT, connect_redis
from chatstream.settings import ConfigError


async def tries(retry: Retry, error: Exception) -> int:
    """How many times ``retry`` runs a command that fails with ``error``."""
    calls = 0

    async def command() -> None:
        nonlocal calls
        calls += 1
        raise error

    async def reconnect(error: Exception) -> None:
        pass

    with pytest.raises(type(error)):
        await retry.call_with_retry(command, reconnect)
    return calls


async def assert_bounded(options: dict[str, Any]) -> None:
    assert options["socket_timeout"] == options["socket_connect_timeout"] == REDIS_TIMEOUT
    assert await tries(options["retry"], RedisConnectionError("refused")) == 2
    assert await tries(options["retry"], RedisTimeoutError("no answer")) == 1


def test_unset_is_the_embedded_store() -> None:
    assert isinstance(connect_redis(None), fakeredis.FakeAsyncRedis)


async def test_one_server() -> None:
    client = connect_redis("redis://:secret@cache.internal:6380/3")
    assert isinstance(client, Redis)
    options = client.connection_pool.connection_kwargs
    assert (options["host"], options["port"], options["db"]) == ("cache.internal", 6380, 3)
    assert options["password"] == "secret"
    await assert_bounded(options)
    assert client.connection_pool.max_connections == REDIS_MAX_CONNECTIONS  # not redis-py's 100


async def test_a_cluster_from_its_nodes() -> None:
    client = connect_redis("redis+cluster://app:p%40ss@10.0.0.1:7000,[::1]:7001,node-3")
    assert isinstance(client, RedisCluster)
    nodes = [(node.host, node.port) for node in client.startup_nodes]
    assert nodes == [("10.0.0.1", 7000), ("::1", 7001), ("node-3", 6379)]
    options = client.connection_kwargs
    assert (options["username"], options["password"]) == ("app", "p@ss")
    assert options["socket_timeout"] == options["socket_connect_timeout"] == REDIS_TIMEOUT
    assert client.nodes_manager.connection_kwargs["max_connections"] == REDIS_MAX_CONNECTIONS
    # The cluster client retries by itself, after reading the layout again: once, and never
    # after a timeout.
    assert client.retry.get_retries() == 1
    assert RedisConnectionError in type(client).ERRORS_ALLOW_RETRY
    assert RedisTimeoutError not in type(client).ERRORS_ALLOW_RETRY


async def test_the_master_that_sentinels_name() -> None:
    client = connect_redis("redis+sentinel://:secret@10.0.0.1:26380,sentinel-2/chat-main")
    assert isinstance(client, Redis)
    pool: Any = client.connection_pool
    assert (pool.service_name, pool.is_master) == ("chat-main", True)
    assert pool.connection_kwargs["password"] == "secret"
    await assert_bounded(pool.connection_kwargs)
    sentinels = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
    addresses = [(sentinel["host"], sentinel["port"]) for sentinel in sentinels]
    assert addresses == [("10.0.0.1", 26380), ("sentinel-2", 26379)]
    assert all(s.get("password") is None for s in sentinels)  # the credentials are the master's
    for sentinel in sentinels:
        await assert_bounded(sentinel)
    assert pool.max_connections == REDIS_MAX_CONNECTIONS
    await client.aclose()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://cache:6379", "must start with redis://"),
        ("redis+sentinel://cache:26379", "master's name"),
        ("redis+sentinel://cache:26379/a/b", "master's name"),
        ("redis+cluster://", "not a host:port"),
        ("redis+cluster://cache:port", "not a host:port"),
        ("redis+cluster://cache:70000", "not a host:port"),
        ("redis+cluster://cache:7000,", "not a host:port"),
        ("redis+cluster://cache:7000/2", "only database 0"),
        ("redis+cluster://cache:7000?ssl=true", "no options"),
        ("redis://cache:port/0", "REDIS_URL"),
    ],
)
def test_a_url_that_cannot_be_used_is_a_config_error(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        connect_redis(url)


def test_the_error_does_not_show_the_password() -> None:
    with pytest.raises(ConfigError) as raised:
        connect_redis("redis+cluster://app:hunter2@cache:port")
    assert "hunter2" not in str(raised.value)


def test_serve_refuses_a_bad_url_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATSTREAM_SECRET_KEY", "k" * 32)
    assert main(["serve", "--model", "mock", "--redis-url", "redis+sentinel://127.0.0.1:1"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("chatstream: REDIS_URL") and "Traceback" not in error
