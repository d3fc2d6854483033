"""Real chatstream servers (:mod:`chatstream.testing`) and redis-servers in subprocesses, for
tests about processes, sockets and crashes."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
import redis

from chatstream.testing import ServerProcess, free_port, serve

Server = ServerProcess
T = TypeVar("T")


@contextmanager
def running_server(*args: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """``chatstream serve`` with ``args`` on a free port, healthy when this yields."""
    with serve(args, env=env, ready_path="/healthz", timeout=60) as server:
        yield server


def wait_for(probe: Callable[[], T], done: Callable[[T], bool], timeout: float = 10.0) -> T:
    """Poll ``probe`` until ``done`` says yes: for state in Redis or in another process, which
    has no event to await."""
    deadline = time.monotonic() + timeout
    while not done(value := probe()):
        assert time.monotonic() < deadline, f"still {value!r} after {timeout} s"
        time.sleep(0.02)
    return value


class RedisProcess:
    """A redis-server of a test's own on a free loopback port, to kill and restart.

    Without ``persistent`` it saves nothing, so a restart loses every key; with it, every write
    goes to an append-only file under ``directory`` first (``appendfsync always``). ``options``
    are more of redis-server's flags; ``config`` a configuration file it reads first (and may
    rewrite, as a sentinel does).
    """

    def __init__(
        self,
        directory: str,
        *,
        persistent: bool = False,
        options: Sequence[str] = (),
        config: str | None = None,
    ) -> None:
        self.port = free_port()
        self.directory = directory
        self.persistent = persistent
        self.options = tuple(options)
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        persistence = ("--appendonly", "yes", "--appendfsync", "always")
        return [
            *("redis-server", *([self.config] if self.config else [])),
            *("--port", str(self.port), "--bind", "127.0.0.1"),
            *("--dir", self.directory, "--save", ""),
            *(persistence if self.persistent else ("--appendonly", "no")),
            *self.options,
        ]

    def client(self) -> redis.Redis:
        """A client of this server alone (never a cluster's or a sentinel's)."""
        return redis.Redis(port=self.port, socket_timeout=1, decode_responses=True)

    def start(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL)
        wait_for(self._answers, bool)

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"redis-server on port {self.port} exited")
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def info(self, section: str) -> dict[str, Any]:
        with self.client() as client:
            found: dict[str, Any] = client.info(section)
            return found

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """kill -9: what the clients see of a crash, or of the machine going away."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()


class ClusterNodes:
    """A Redis Cluster of a test's own: ``masters`` nodes sharing the slots, each with
    ``replicas`` replicas. Nodes count a peer as failed after :data:`NODE_TIMEOUT_MS`, so a
    replica takes over a killed master within a few seconds."""

    NODE_TIMEOUT_MS = 1000

    def __init__(self, directory: str, *, masters: int = 3, replicas: int = 0) -> None:
        self.replicas = replicas
        self.nodes = [
            RedisProcess(
                os.path.join(directory, f"node-{n}"),
                options=(
                    *("--cluster-enabled", "yes", "--cluster-port", str(free_port())),
                    *("--cluster-node-timeout", str(self.NODE_TIMEOUT_MS)),
                    *("--cluster-config-file", "nodes.conf", "--repl-diskless-sync-delay", "0"),
                ),
            )
            for n in range(masters * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> None:
        """Start every node, join them (``redis-cli --cluster create``) and wait for the
        cluster to be whole: every slot served, every replica in sync."""
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        replicas = ("--cluster-replicas", str(self.replicas))
        create = ["redis-cli", "--cluster", "create", *addresses, *replicas, "--cluster-yes"]
        subprocess.run(create, check=True, stdout=subprocess.DEVNULL, timeout=30)
        wait_for(self.whole, bool, timeout=30)

    def whole(self) -> bool:
        """Every running node sees the cluster ``ok`` and knows every node; replicas are in
        sync."""
        running = self._running()
        for node in running:
            with node.client() as client:
                info = client.cluster("info")
                replication = client.info("replication")
            if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) < len(running):
                return False
            if replication["role"] == "slave" and replication["master_link_status"] != "up":
                return False
        return True

    def state(self, node: RedisProcess) -> str:
        """``ok`` or ``fail``, as ``node`` sees the cluster."""
        with node.client() as client:
            return str(client.cluster("info")["cluster_state"])

    def master_of(self, key: str) -> RedisProcess:
        """The node that serves ``key``'s slot now."""
        with self._running()[0].client() as client:
            slot = client.cluster("keyslot", key)
            for start, end, (_, port, *_), *_ in client.cluster("slots"):
                if start <= slot <= end:
                    return next(node for node in self.nodes if node.port == port)
        raise LookupError(f"no node serves slot {slot}")

    def flush(self) -> None:
        """Delete every key (on every master)."""
        for node in self.masters():
            with node.client() as client:
                client.flushall()

    def replicate(self) -> None:
        """Wait for every master's writes so far to reach its replicas (``WAIT``)."""
        for node in self.masters():
            _replicate(node, self.replicas)

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def masters(self) -> list[RedisProcess]:
        """The running nodes that are masters now."""
        return [node for node in self._running() if node.info("replication")["role"] == "master"]

    def _running(self) -> list[RedisProcess]:
        return [node for node in self.nodes if node.running]


class SentinelGroup:
    """A primary, its replica and one sentinel watching them (quorum 1), of a test's own. The
    sentinel counts the primary as down after :data:`DOWN_AFTER_MS` and promotes the replica."""

    SERVICE = "chatstream"
    DOWN_AFTER_MS = 500

    def __init__(self, directory: str) -> None:
        self.primary = RedisProcess(
            os.path.join(directory, "primary"), options=("--repl-diskless-sync-delay", "0")
        )
        self.replica = RedisProcess(
            os.path.join(directory, "replica"),
            options=("--replicaof", "127.0.0.1", str(self.primary.port)),
        )
        self.sentinel = RedisProcess(
            os.path.join(directory, "sentinel"),
            options=("--sentinel",),
            config=os.path.join(directory, "sentinel.conf"),
        )

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.SERVICE}"

    def start(self) -> None:
        """Start the primary and the replica, wait for them to be in sync, then the sentinel,
        and wait for it to know the replica (it can fail over from then on)."""
        self.primary.start()
        self.replica.start()
        wait_for(lambda: self.replica.info("replication")["master_link_status"], "up".__eq__)
        assert self.sentinel.config is not None
        with open(self.sentinel.config, "w") as config:
            config.write(
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} 1\n"
                f"sentinel down-after-milliseconds {self.SERVICE} {self.DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {self.SERVICE} 10000\n"
            )
        self.sentinel.start()
        wait_for(self._replicas, lambda replicas: replicas == [self.replica.port], timeout=15)

    def _replicas(self) -> list[int]:
        with self.sentinel.client() as client:
            return [int(replica["port"]) for replica in client.sentinel_slaves(self.SERVICE)]

    def primary_port(self) -> int:
        """The port of the node the sentinel names primary now."""
        with self.sentinel.client() as client:
            _, port = client.sentinel_get_master_addr_by_name(self.SERVICE)
        return int(port)

    def replicate(self) -> None:
        """Wait for the primary's writes so far to reach the replica (``WAIT``)."""
        _replicate(self.primary, 1)

    def kill(self) -> None:
        for node in (self.sentinel, self.replica, self.primary):
            node.kill()


def _replicate(primary: RedisProcess, replicas: int) -> None:
    with primary.client() as client:
        assert client.wait(replicas, 5000) >= replicas, f"{primary.port} did not replicate"


def require_redis(*programs: str) -> None:
    """Fail in CI, skip elsewhere, without ``programs`` (redis-server, redis-cli) on PATH."""
    missing = [program for program in programs if shutil.which(program) is None]
    if missing:
        message = f"this test needs {', '.join(missing)} on PATH"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def redis_process(directory: str | os.PathLike[str], *, persistent: bool = False) -> RedisProcess:
    """A :class:`RedisProcess` (not started); fails in CI, skips elsewhere, without
    redis-server on PATH."""
    require_redis("redis-server")
    return RedisProcess(os.fspath(directory), persistent=persistent)
