"""Real chatstream servers (:mod:`chatstream.testing`) and redis-servers in subprocesses, for
tests about processes, sockets and crashes."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from chatstream.testing import ServerProcess, free_port, serve

Server = ServerProcess


@contextmanager
def running_server(*args: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """``chatstream serve`` with ``args`` on a free port, healthy when this yields."""
    with serve(args, env=env, ready_path="/healthz", timeout=60) as server:
        yield server


class RedisProcess:
    """A redis-server of a test's own on a free loopback port, to kill and restart.

    Without ``persistent`` it saves nothing, so a restart loses every key; with it, every write
    goes to an append-only file under ``directory`` first (``appendfsync always``).
    """

    def __init__(self, directory: str, *, persistent: bool = False) -> None:
        self.port = free_port()
        self.directory = directory
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        persistence = ("--appendonly", "yes", "--appendfsync", "always")
        command = [
            *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
            *("--dir", self.directory, "--save", ""),
            *(persistence if self.persistent else ("--appendonly", "no")),
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.02)
            finally:
                client.close()

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


def redis_process(directory: str | os.PathLike[str], *, persistent: bool = False) -> RedisProcess:
    """A :class:`RedisProcess` (not started); fails in CI, skips elsewhere, without
    redis-server on PATH."""
    if shutil.which("redis-server") is None:
        message = "this test needs redis-server on PATH"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return RedisProcess(os.fspath(directory), persistent=persistent)
