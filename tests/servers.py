"""Real chatstream servers and redis-servers in subprocesses, for tests about processes, sockets
and crashes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """Everything the server wrote to stderr (its logs) so far."""
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            return log.read()

    def kill(self) -> None:
        """kill -9: no cleanup of any kind."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


@contextmanager
def running_server(*args: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """``chatstream serve`` with ``args`` on a free port, ready when this yields."""
    port = free_port()
    environment = {**os.environ, "CHATSTREAM_SECRET_KEY": "test-secret", **(env or {})}
    if env is None or "REDIS_URL" not in env:
        environment.pop("REDIS_URL", None)
    command = [sys.executable, "-m", "chatstream.cli", "serve", "--port", str(port), *args]
    # The logs go to a file, not a pipe: a pipe nobody reads blocks a busy server once full.
    with tempfile.NamedTemporaryFile(prefix="chatstream-", suffix=".log") as log:
        process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=log)
        server = Server(process, port, log.name)
        try:
            wait_until_healthy(server)
            yield server
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    server.kill()


def wait_until_healthy(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"the server exited with {server.process.returncode}: {server.log()}"
            )
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"the server on port {server.port} did not become healthy")


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
