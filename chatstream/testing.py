"""``chatstream serve`` in a subprocess on a free port, for tests and benchmarks that need a real
server: sockets, several processes, kill -9, startup and latency timings; and ``transformers
serve``, as an OpenAI-compatible upstream for the remote engine.

    with serve(["--model", "mock"]) as server:
        httpx.get(f"{server.url}/healthz")
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """A running ``chatstream serve``."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: str
    ready_after: float = 0.0
    """Seconds from launching the process to the first 200 of its readiness route."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        """Everything the server wrote so far (its logs)."""
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            return log.read()

    def kill(self) -> None:
        """kill -9: no cleanup of any kind."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


@contextmanager
def serve(
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    secret_key: str = "chatstream-test-secret-0123456789abcdef",
    ready_path: str = "/readyz",
    timeout: float = 180.0,
    port: int | None = None,
) -> Iterator[ServerProcess]:
    """``chatstream serve --port PORT ARGS``, yielded once ``ready_path`` answers 200.

    The server inherits this process's environment, with ``CHATSTREAM_SECRET_KEY`` set to
    ``secret_key`` and ``env`` on top; ``REDIS_URL`` only when ``env`` has it (else the embedded
    store). ``port`` is a free one unless given (to start a server again where it was). Its
    output goes to a temporary file (a pipe nobody reads would fill and stall it), shown in the
    exception if it exits or is not ready within ``timeout`` seconds. At the end it is
    terminated, and killed if it does not stop within 15 s.
    """
    port = port or free_port()
    environment = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    environment.update({"CHATSTREAM_SECRET_KEY": secret_key, **(env or {})})
    command = [sys.executable, "-m", "chatstream.cli", "serve", "--port", str(port), *args]
    with _running(command, port, environment, ready_path, timeout) as server:
        yield server


@contextmanager
def transformers_serve(
    model: str, *, timeout: float = 300.0, port: int | None = None
) -> Iterator[ServerProcess]:
    """``transformers serve --continuous-batching`` of the local ``model`` directory on the
    CPU, offline (``HF_HUB_OFFLINE=1``), yielded once its ``/health`` answers: an
    OpenAI-compatible upstream at ``{url}/v1`` whose model is named ``model``."""
    port = port or free_port()
    executable = os.path.join(os.path.dirname(sys.executable), "transformers")
    command = [
        *(executable, "serve", "--continuous-batching", "--device", "cpu"),
        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", model),
    ]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with _running(command, port, environment, "/health", timeout) as server:
        yield server


@contextmanager
def _running(
    command: Sequence[str],
    port: int,
    environment: Mapping[str, str],
    ready_path: str,
    timeout: float,
) -> Iterator[ServerProcess]:
    with tempfile.NamedTemporaryFile(prefix="chatstream-", suffix=".log") as log:
        launched = time.perf_counter()
        process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)
        server = ServerProcess(process, port, log.name)
        try:
            _wait_ready(server, ready_path, timeout)
            server.ready_after = time.perf_counter() - launched
            yield server
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    server.kill()


def _wait_ready(server: ServerProcess, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.url, timeout=2) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"the server exited with {server.process.returncode}:\n{server.log()}"
                )
            try:
                if client.get(path).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.02)
    raise TimeoutError(f"the server at {server.url} was not ready after {timeout:.0f} s")
