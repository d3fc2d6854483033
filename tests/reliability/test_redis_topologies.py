"""``chatstream serve`` on a Redis Cluster and behind Sentinel, each started by the test on
loopback: what works on one server works there, and a failover under traffic costs 503s (never
a 500, never a hang) and no restart."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest

from tests.servers import (
    ClusterNodes,
    RedisProcess,
    SentinelGroup,
    Server,
    running_server,
    wait_for,
)

from ..sse import iter_events
from .state import SEMAPHORE, assert_well_formed, errors_in, history

pytestmark = pytest.mark.redis

Topology = ClusterNodes | SentinelGroup
SSE = {"accept": "text/event-stream"}
TIMEOUT = httpx.Timeout(10.0)
"""Well past Redis's socket timeout (2 s) and its one retry: a request that hangs fails."""
MOCK = ("--model", "mock", "--mock-token-delay", "0.02")
LONG_INPUT = {"user_input": " ".join(["word"] * 100)}  # the mock echoes it: 2 s and more


@pytest.fixture(params=["cluster", "sentinel"])
def topology(request: pytest.FixtureRequest) -> Topology:
    """A 3-master cluster, or a primary with a replica behind a sentinel."""
    name = {"cluster": "redis_cluster", "sentinel": "sentinel_group"}[request.param]
    found: Topology = request.getfixturevalue(name)
    return found


@pytest.fixture(params=["cluster", "sentinel"])
def replicated(request: pytest.FixtureRequest) -> Topology:
    """A cluster whose 3 masters each have a replica, or the sentinel's primary and replica."""
    name = {"cluster": "redis_cluster_with_replicas", "sentinel": "sentinel_group"}
    found: Topology = request.getfixturevalue(name[request.param])
    return found


def sse_turn(
    server: Server, body: dict[str, str], started: threading.Event | None = None
) -> list[str]:
    """A new user's SSE turn; its events, by name (``started`` is set at the first delta)."""
    with (
        httpx.Client(base_url=server.url, timeout=TIMEOUT) as client,
        client.stream("POST", "/chat_stream", json=body, headers=SSE) as reply,
    ):
        names = []
        for event in iter_events(reply.iter_lines()):
            names.append(event.name)
            if started is not None and event.name == "delta":
                started.set()
        return names


def test_two_instances_chat_queue_and_rate_limit_as_one(topology: Topology) -> None:
    env = {"REDIS_URL": topology.url, "CHATSTREAM_RATE_LIMIT": "5"}
    args = (*MOCK, "--max-concurrent", "1")
    with (
        running_server(*args, env=env) as a,
        running_server(*args, env=env) as b,
        ThreadPoolExecutor(2) as pool,
    ):
        assert httpx.get(f"{a.url}/readyz").status_code == 200
        # A conversation goes on across turns and instances (2 turns).
        with httpx.Client(base_url=a.url, timeout=TIMEOUT) as on_a:
            assert on_a.post("/chat_stream", json={"user_input": "on A"}).status_code == 200
            cookies = on_a.cookies
        with httpx.Client(base_url=b.url, cookies=cookies, timeout=TIMEOUT) as on_b:
            assert on_b.post("/chat_stream", json={"user_input": "on B"}).status_code == 200
            assert [m["content"] for m in history(on_b)][::2] == ["on A", "on B"]
            assert_well_formed(history(on_b))
        # One permit for both instances: while A streams, B's turn queues, then runs (2 turns).
        started = threading.Event()
        holder = pool.submit(sse_turn, a, LONG_INPUT, started)
        assert started.wait(10)
        waiter = sse_turn(b, {"user_input": "x"})
        assert (waiter[0], waiter[-1]) == ("queued", "done")
        assert holder.result(10)[-1] == "done"
        # Every client here is 127.0.0.1: its fifth turn of the minute passes, its sixth not.
        assert httpx.post(f"{b.url}/chat_stream", json={"user_input": "5"}).status_code == 200
        refused = httpx.post(f"{a.url}/chat_stream", json={"user_input": "6"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (429, "too_many_requests")
        assert int(refused.headers["retry-after"]) >= 1
        load = httpx.get(f"{a.url}/get_load").json()
        assert (load["processing"], load["waiting"]) == (0, 0)


def hot_primary(topology: Topology) -> RedisProcess:
    """The node that serves the admission semaphore now: the Sentinel's primary, or the
    cluster's master of the semaphore's slot."""
    if isinstance(topology, ClusterNodes):
        return topology.master_of(SEMAPHORE.holders)
    promoted = topology.primary_port() == topology.replica.port
    return topology.replica if promoted else topology.primary


def wake_subscribers(node: RedisProcess) -> int:
    with node.client() as client:
        ((_, count),) = client.pubsub_numsub(SEMAPHORE.wake_channel)
    return int(count)


@contextmanager
def traffic(server: Server, pool: ThreadPoolExecutor) -> Iterator[Future[list[httpx.Response]]]:
    """New users' turns, one after another, until the block ends (however it ends)."""
    stop = threading.Event()

    def turns() -> list[httpx.Response]:
        answers = []
        for _ in range(5000):  # a bound: the loop ends with the block long before
            if stop.is_set():
                break
            body = {"user_input": "x"}
            answers.append(httpx.post(f"{server.url}/chat_stream", json=body, timeout=TIMEOUT))
        return answers

    answers = pool.submit(turns)
    try:
        yield answers
    finally:
        stop.set()


def test_a_failover_under_traffic_costs_503s_then_serves_again(replicated: Topology) -> None:
    args = (*MOCK, "--max-concurrent", "1", "--lease-ttl", "3", "--rate-limit", "0")
    with (
        running_server(*args, env={"REDIS_URL": replicated.url}) as server,
        httpx.Client(base_url=server.url, timeout=TIMEOUT) as alice,
        ThreadPoolExecutor(3) as pool,
    ):
        assert alice.post("/chat_stream", json={"user_input": "before"}).status_code == 200
        replicated.replicate()  # asynchronous replication: what the replicas have is kept
        # A turn streams and one queues when the primary dies, and new users keep coming.
        started = threading.Event()
        in_flight = pool.submit(sse_turn, server, LONG_INPUT, started)
        assert started.wait(10)
        queued = pool.submit(sse_turn, server, {"user_input": "queued"})
        wait_for(lambda: httpx.get(f"{server.url}/get_load").json()["waiting"], (1).__eq__)
        with traffic(server, pool) as answers:
            killed = hot_primary(replicated)
            killed.kill()
            wait_for(lambda: hot_primary(replicated) is not killed, bool, timeout=30)
            wait_for(lambda: httpx.get(f"{server.url}/readyz").status_code, (200).__eq__)

        # Every stream ended, with its reply or an error event; nothing hung.
        assert in_flight.result(10)[-1] in ("done", "error")
        assert queued.result(10)[-1] in ("done", "error")
        during = answers.result(10)
        failed = [r.text[:300] for r in during if r.status_code not in (200, 503)]
        assert {r.status_code for r in during} <= {200, 503}, (
            failed[:3],
            errors_in(server.log())[:20],
        )
        assert 503 in {r.status_code for r in during}  # the failover was felt
        for refused in (r for r in during if r.status_code == 503):
            assert_unavailable(refused)
        # The same process serves again; what was replicated before the failover is there.
        # Permits and leases of requests cut off by the failover expire within the lease TTL,
        # and the queue's wake-up listener listens on the new primary.
        wait_for(lambda: httpx.get(f"{server.url}/get_load").json()["processing"], (0).__eq__)
        wait_for(lambda: wake_subscribers(hot_primary(replicated)), (1).__eq__)
        assert alice.post("/chat_stream", json={"user_input": "after"}).status_code == 200
        assert [m["content"] for m in history(alice)][::2] == ["before", "after"]
        assert sse_turn(server, {"user_input": "again"})[-1] == "done"
        assert server.process.poll() is None
        assert "answered with a 500" not in server.log()


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "store_unavailable"
    assert int(response.headers["retry-after"]) >= 1


def test_a_failed_cluster_is_not_ready_until_it_is_whole_again(redis_cluster: ClusterNodes) -> None:
    """A master without a replica dies: the cluster stops serving every slot (its default,
    ``cluster-require-full-coverage yes``) until the master is back."""
    with (
        running_server(*MOCK, env={"REDIS_URL": redis_cluster.url}) as server,
        httpx.Client(base_url=server.url, timeout=TIMEOUT) as alice,
    ):
        assert alice.post("/chat_stream", json={"user_input": "before"}).status_code == 200
        master = redis_cluster.master_of(SEMAPHORE.holders)
        master.kill()
        survivor = next(node for node in redis_cluster.nodes if node.running)
        wait_for(lambda: redis_cluster.state(survivor), "fail".__eq__)
        assert_unavailable(httpx.get(f"{server.url}/readyz", timeout=TIMEOUT))
        assert_unavailable(alice.post("/chat_stream", json={"user_input": "during"}))
        assert_unavailable(alice.get("/get_load"))
        # The same port and nodes.conf: it takes its slots back, empty (it saved nothing).
        master.start()
        wait_for(redis_cluster.whole, bool, timeout=30)
        wait_for(lambda: httpx.get(f"{server.url}/readyz").status_code, (200).__eq__)
        assert alice.post("/chat_stream", json={"user_input": "after"}).status_code == 200
        assert_well_formed(history(alice))
