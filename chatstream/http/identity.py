"""A user signed in by the proxy in front: ``CHATSTREAM_TRUSTED_USER_HEADER``.

An authenticating proxy (oauth2-proxy, an identity-aware load balancer) signs users in and
names them in a header (``X-Forwarded-User``). :class:`TrustedUserHeader` makes that user
``request.user`` (Starlette's convention, which the conversation owner follows), but only for
requests that come straight from a trusted proxy address (``FORWARDED_ALLOW_IPS``, as uvicorn's
proxy headers): from anyone else the header is removed, so no client can name itself. It must
see the peer's own address, so it runs before the proxy-headers rewrite of the client address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.authentication import BaseUser
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

MAX_USER_LENGTH = 256


class HeaderUser(BaseUser):
    """A user the trusted proxy named."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.name

    @property
    def identity(self) -> str:
        return self.name


class TrustedHosts:
    """Addresses and networks (``10.0.0.0/8``), or ``*`` for any."""

    def __init__(self, hosts: Sequence[str]) -> None:
        self.any = "*" in hosts
        self.networks = [
            ipaddress.ip_network(host, strict=False) for host in hosts if host and host != "*"
        ]

    def __contains__(self, address: str) -> bool:
        if self.any:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)


class TrustedUserHeader:
    """Sets ``scope["user"]`` from ``header`` on requests from ``trusted`` peers."""

    def __init__(self, app: ASGIApp, header: str, trusted: Sequence[str]) -> None:
        self.app = app
        self.header = header.lower().encode("latin-1")
        self.trusted = TrustedHosts(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            peer = scope.get("client")
            named = Headers(scope=scope).get(self.header.decode("latin-1"), "").strip()
            # Never passed on: the app sees the user only as request.user.
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() != self.header]
            if peer is not None and peer[0] in self.trusted and 0 < len(named) <= MAX_USER_LENGTH:
                scope["user"] = HeaderUser(named)
        await self.app(scope, receive, send)
