"""Real chatstream servers in subprocesses, for tests about processes, sockets and crashes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    server = Server(process, port)
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
        if process.stderr is not None:
            process.stderr.close()


def wait_until_healthy(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            errors = server.process.stderr.read().decode() if server.process.stderr else ""
            raise RuntimeError(f"the server exited with {server.process.returncode}: {errors}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"the server on port {server.port} did not become healthy")
