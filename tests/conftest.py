"""Redis for tests.

``redis``: real Redis when ``REDIS_URL`` is set (CI), the embedded fakeredis otherwise.
``private_redis``: a redis-server of the test's own, to kill or restart; ``redis_cluster`` (3
masters), ``redis_cluster_with_replicas`` (3 masters, 3 replicas) and ``sentinel_group`` (a
primary, a replica, a sentinel): topologies of the test's own, killed at its end however it ends.
``cluster_client``: a client of a 3-master cluster that the tests which kill nothing share.
``real_redis``: always a real server (``REDIS_URL``, else 127.0.0.1:6379 db 15 when it answers);
for tests about Redis itself. In CI (``CI`` set) a missing server fails these tests, never skips.
Each fixture flushes its database before and after the test.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis as sync_redis
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from sessions.embedded import embedded_redis
from tests.servers import ClusterNodes, RedisProcess, SentinelGroup, redis_process, require_redis

LOCAL_REDIS_URL = "redis://127.0.0.1:6379/15"


def real_redis_url() -> str:
    """The URL of a real Redis for this test run; fails (CI) or skips (locally) without one."""
    url = os.environ.get("REDIS_URL") or LOCAL_REDIS_URL
    try:
        sync_redis.Redis.from_url(url, socket_timeout=1).ping()
    except sync_redis.RedisError as exc:
        message = f"this test needs a real Redis at {url}: {exc}"
        if os.environ.get("CI") or os.environ.get("REDIS_URL"):
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def redis_url() -> str:
    return real_redis_url()


@pytest.fixture
async def real_redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, socket_timeout=5)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    if os.environ.get("REDIS_URL"):
        client = Redis.from_url(real_redis_url(), socket_timeout=5)
        await client.flushdb()
    else:
        client = embedded_redis()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test's own, without persistence, for the test to kill or
    restart (a restart loses every key)."""
    server = redis_process(tmp_path)
    server.start()
    yield server
    server.kill()


@contextmanager
def _running(topology: ClusterNodes | SentinelGroup) -> Iterator[None]:
    require_redis("redis-server", "redis-cli")
    try:
        topology.start()
        yield
    finally:
        topology.kill()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[ClusterNodes]:
    cluster = ClusterNodes(str(tmp_path / "cluster"))
    with _running(cluster):
        yield cluster


@pytest.fixture
def redis_cluster_with_replicas(tmp_path: Path) -> Iterator[ClusterNodes]:
    cluster = ClusterNodes(str(tmp_path / "cluster"), replicas=1)
    with _running(cluster):
        yield cluster


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    group = SentinelGroup(str(tmp_path / "sentinel"))
    with _running(group):
        yield group


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterNodes]:
    cluster = ClusterNodes(str(tmp_path_factory.mktemp("shared-cluster")))
    with _running(cluster):
        yield cluster


@pytest.fixture
async def cluster_client(shared_cluster: ClusterNodes) -> AsyncIterator[RedisCluster]:
    shared_cluster.flush()
    startup = [ClusterNode("127.0.0.1", node.port) for node in shared_cluster.nodes]
    client = RedisCluster(startup_nodes=startup, socket_timeout=5)
    yield client
    await client.aclose()
    shared_cluster.flush()
