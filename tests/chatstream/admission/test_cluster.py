"""The semaphore on a real 3-master Redis Cluster.

A script's ``PUBLISH`` on the wake channel is broadcast over the cluster bus, so a subscriber on
any node hears it; each instance's listener subscribes on the node that serves the channel's
slot (the semaphore's own, by its hash tag).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster

from chatstream.admission import semaphore as semaphore_module
from chatstream.admission.semaphore import RedisSemaphore
from chatstream.keys import SemaphoreKeys
from tests.servers import ClusterNodes

pytestmark = pytest.mark.redis

WAKE = SemaphoreKeys.build("generation").wake_channel


async def next_message(pubsub: PubSub) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while (message := await pubsub.get_message(timeout=1)) is None:
            pass
    found: dict[str, Any] = message
    return found


async def subscribers(nodes: list[Redis]) -> int:
    """Subscribers of the wake channel on all ``nodes`` (each counts its own)."""
    counts = await asyncio.gather(*(node.pubsub_numsub(WAKE) for node in nodes))
    return sum(int(count) for ((_, count),) in counts)


async def test_a_release_wakes_waiters_of_another_instance_through_any_node(
    shared_cluster: ClusterNodes, cluster_client: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No periodic look and no heartbeat expiry before the queue timeout: only the wake-up
    # signal can hand the permit over in time.
    monkeypatch.setattr(semaphore_module, "RECHECK_INTERVAL", 60.0)
    monkeypatch.setattr(semaphore_module, "WAITER_TTL", 120.0)
    startup = [ClusterNode("127.0.0.1", node.port) for node in shared_cluster.nodes]
    other_instance = RedisCluster(startup_nodes=startup, socket_timeout=5)
    holder = RedisSemaphore(cluster_client, capacity=1, lease_ttl=120)
    waiter = RedisSemaphore(other_instance, capacity=1, lease_ttl=120, queue_timeout=10)
    nodes = [Redis(port=node.port) for node in shared_cluster.nodes]
    listeners = [node.pubsub(ignore_subscribe_messages=True) for node in nodes]
    for listener in listeners:
        await listener.subscribe(WAKE)
    queued, granted = asyncio.Event(), asyncio.Event()

    async def wait_in_line() -> None:
        async with waiter.acquire(on_position=lambda position: queued.set()):
            granted.set()

    async with holder.acquire():
        waiting = asyncio.create_task(wait_in_line())
        await queued.wait()
        # The waiter's instance subscribed (besides this test's one listener on each node).
        async with asyncio.timeout(10):
            while await subscribers(nodes) == len(nodes):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert not granted.is_set()
    await waiting  # within the queue timeout: the signal reached the other instance
    for listener in listeners:  # and every node heard it
        assert (await next_message(listener))["channel"] == WAKE.encode()
        await listener.aclose()  # type: ignore[no-untyped-call]
    await asyncio.gather(*(node.aclose() for node in nodes))
    await other_instance.aclose()
    await holder.aclose()
    await waiter.aclose()
