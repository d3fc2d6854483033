"""What the web page's browser tests share: launching Chromium, a page on a fresh session, and
the steps and checks a user's session goes through (send, wait for a reply, read what the
server stored, take a screenshot into ``test-artifacts/``)."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect

from chatstream.engines.mock import FILLER
from chatstream.testing import ServerProcess, serve

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = REPO / "test-artifacts"
TIMEOUT_MS = 10_000

REPLY = ".message.assistant:not([hidden]) .content"
STOPPED = re.compile(r"\bstopped\b")


@contextmanager
def page_server(args: Sequence[str], ready_path: str = "/healthz") -> Iterator[ServerProcess]:
    """``chatstream serve ARGS`` for the page's tests: one signing key, so that its cookies are
    stable for the module, yielded once ``ready_path`` answers."""
    with serve(args, secret_key="browser-test-secret", ready_path=ready_path) as server:
        yield server


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def new_context(browser: Browser, server: str, **options: Any) -> BrowserContext:
    """A fresh browser profile (no cookie: a new session) on ``server``."""
    options = {"viewport": {"width": 1100, "height": 760}, **options}
    context = browser.new_context(base_url=server, **options)
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    return context


def open_page(context: BrowserContext, path: str = "/") -> Page:
    """The page, once its conversation has loaded (Send waits for that)."""
    page = context.new_page()
    page.goto(path)
    page.wait_for_function(
        "() => !document.getElementById('empty').hidden || document.querySelector('.message')"
    )
    return page


def mock_reply(user_input: str) -> str:
    """What the mock engine answers to ``user_input``."""
    return " ".join([user_input.strip(), *FILLER])


def send(page: Page, text: str) -> None:
    page.fill("#input", text)
    expect(page.locator("#send")).to_be_enabled()  # once the history has loaded
    page.press("#input", "Enter")


def partial_reply(page: Page) -> str:
    """The last reply's text the first moment some, not all, of it has arrived."""
    handle = page.wait_for_function(
        f"""() => {{
            const replies = document.querySelectorAll('{REPLY}');
            const reply = replies[replies.length - 1];
            const text = reply ? reply.textContent : '';
            return text && reply.closest('.streaming') ? text : null;
        }}"""
    )
    text: str = handle.json_value()
    return text


def wait_until_idle(page: Page) -> None:
    expect(page.locator("#stop")).to_be_disabled()
    expect(page.locator(".message.streaming")).to_have_count(0)


def stored_messages(page: Page) -> list[dict[str, Any]]:
    response = page.request.get("/get_prompt")
    assert response.ok
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def stored_reply(page: Page) -> dict[str, Any]:
    """The session's last reply once the server has stored it (the client does not wait)."""
    deadline = time.monotonic() + 5
    while (
        not (messages := stored_messages(page))
        or messages[-1]["role"] != "assistant"
        or messages[-1].get("status") == "generating"
    ):
        assert time.monotonic() < deadline, "the reply was never stored"
        time.sleep(0.05)
    return messages[-1]


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / name)


class FlakyNetwork:
    """A TCP proxy in front of a server whose connections can be cut, and new ones refused for
    a while, as a dropped network does (Chromium's offline mode spares running streams)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.refusing = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if self.refusing:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._open.update((client, upstream))
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        self._close(source, target)

    def _close(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with self._lock:
                self._open.discard(sock)
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def drop(self) -> None:
        """Cut every open connection."""
        with self._lock:
            sockets = list(self._open)
        self._close(*sockets)

    def close(self) -> None:
        self._listener.close()
        self.drop()


@contextmanager
def flaky_network(server_url: str) -> Iterator[FlakyNetwork]:
    network = FlakyNetwork(int(server_url.rsplit(":", 1)[1]))
    try:
        yield network
    finally:
        network.close()
