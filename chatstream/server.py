"""Running the app under uvicorn with bounded connections: what ``chatstream serve`` does.

uvicorn bounds a request's header size (with its h11 parser) and the connections open at once
(``limit_concurrency``), and closes idle keep-alive connections, but it waits forever for a
request's headers: 600 clients sending a byte every 5 s would each hold a connection.
:class:`BoundedH11Protocol` closes a connection whose request headers are not all in within
``header_timeout`` seconds. Bodies are bounded in time by the routes themselves
(``RequestLimits.body_timeout``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .config import ServerLimits


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections that send their request headers too slowly."""

    header_timeout = ServerLimits.header_timeout

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._waiting_for: object = None
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not self._waiting_for and self._header_timer is not None:
            self._header_timer.cancel()  # the request line and headers are in
            self._header_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._await_headers()  # the next request on this connection gets the same time

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        self._waiting_for = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.cycle is self._waiting_for and not self.transport.is_closing():
            self.transport.close()


def run(app: Any, *, host: str, port: int, limits: ServerLimits, log_level: str) -> None:
    """Serve ``app`` until interrupted."""
    protocol = type(
        "ChatStreamH11", (BoundedH11Protocol,), {"header_timeout": limits.header_timeout}
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        http=protocol,
        h11_max_incomplete_event_size=limits.max_header_bytes,
        limit_concurrency=limits.max_connections,
        proxy_headers=False,  # the app applies them (chatstream.app), after the user header
        timeout_keep_alive=int(limits.keep_alive_timeout),
        log_level=log_level,
        log_config=None,  # uvicorn's loggers go through chatstream's handler
    )
