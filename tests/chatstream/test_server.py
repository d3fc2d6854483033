"""Against a real uvicorn server: a client socket that closes mid-stream."""

from __future__ import annotations

import contextlib
import json
import socket
import time

import httpx

from tests.servers import running_server


def post_and_leave_after_first_chunk(port: int, payload: dict[str, str]) -> tuple[str, str]:
    """POST over a raw socket, read the headers and the first body bytes, then close.

    Returns the Set-Cookie value and the body bytes seen."""
    body = json.dumps(payload).encode()
    request = (
        f"POST /chat_stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(4096)
        head, _, rest = received.partition(b"\r\n\r\n")
        while not rest:
            rest = sock.recv(4096)
    cookie = next(
        line.split(":", 1)[1].split(";")[0].strip()
        for line in head.decode().split("\r\n")
        if line.lower().startswith("set-cookie:")
    )
    return cookie, rest.decode(errors="replace")


def test_client_closing_mid_stream_stops_generation_and_keeps_the_partial_reply() -> None:
    """With no detach grace (the seed's way): the reply stops when its only client leaves."""
    args = ("--model", "mock", "--mock-token-delay", "0.05", "--detach-grace", "0")
    with running_server(*args) as server:
        cookie, _ = post_and_leave_after_first_chunk(server.port, {"user_input": "Tell me more"})
        headers = {"cookie": cookie}
        deadline = time.monotonic() + 10
        messages: list[dict[str, object]] = []
        while time.monotonic() < deadline and len(messages) < 2:
            messages = httpx.get(f"{server.url}/get_prompt", headers=headers).json()["messages"]
            time.sleep(0.05)
        user, reply = messages
        assert user["content"] == "Tell me more"
        assert reply["finish_reason"] == "cancelled"
        with httpx.Client(base_url=server.url, headers=headers) as client:
            full = client.post("/chat_stream", json={"regenerate": True})
            assert full.status_code == 200  # the lease was released
            assert len(str(reply["content"])) < len(full.text)
            load = client.get("/get_load").json()
            assert (load["processing"], load["waiting"]) == (0, 0)


def read_all(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_connections_are_bounded_in_header_size_and_time() -> None:
    """A 20 MB Cookie header is refused, and a client that trickles its headers is cut off."""
    args = ("--model", "mock", "--header-timeout", "0.5")
    with running_server(*args) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            huge = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: " + b"a" * 20_000_000
            with contextlib.suppress(OSError):  # the server may close while we still send
                sock.sendall(huge + b"\r\n\r\n")
            answer = read_all(sock)
        assert not answer.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never ends
            assert read_all(slow) == b""  # closed by the server
        assert time.monotonic() - started < 5
        with httpx.Client(base_url=server.url) as client:
            assert client.get("/healthz").status_code == 200  # a normal client is unaffected


def test_the_interactive_docs_are_off_unless_asked_for() -> None:
    with running_server("--model", "mock") as server:
        for path in ("/docs", "/redoc", "/openapi.json"):
            response = httpx.get(f"{server.url}{path}")
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "not_found"
    with running_server("--model", "mock", "--docs") as server:
        assert httpx.get(f"{server.url}/openapi.json").json()["info"]["title"] == "chatstream"
        assert httpx.get(f"{server.url}/docs").status_code == 200
