"""Request hygiene: what every chatstream route checks before it acts, and the host check.

:func:`guard_request` runs first on every route: the API key (where ``AccessConfig`` asks for
one), then, for state-changing methods, the same-site check and the JSON body check.

A web page on another site can make a browser send requests to this one, cookies included; a
form or a ``text/plain`` fetch needs no CORS preflight. So a request that changes state must
carry a JSON body (a cross-site page cannot send ``application/json`` without a preflight that
this server never answers) and must not come from another site: its ``Sec-Fetch-Site`` must be
``same-origin`` or ``none``, or, from browsers that do not send it, its ``Origin`` must be this
server's own (Go's ``CrossOriginProtection`` and Django's origin check do the same). Requests
without either header are not from a browser and pass. Origins listed in ``allowed_origins``
pass too. Safe methods (GET, HEAD, OPTIONS) change nothing and are not checked, so a link from
another site to the chat page still opens it.

:class:`HostGuard` refuses requests whose ``Host`` is not one the server answers to (DNS
rebinding: a hostile name resolved to 127.0.0.1 would otherwise reach a server on loopback).
"""

from __future__ import annotations

import hmac
from collections.abc import Collection
from typing import Literal
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import AccessConfig, key_digest
from ..errors import ForbiddenOrigin, InvalidHost, Unauthorized, UnsupportedMediaType
from .errors import error_response

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PROBES = frozenset({"/healthz", "/readyz"})
_GUARDED = "chatstream.guarded"

Surface = Literal["v1", "chat"]
"""Which API a route belongs to: the OpenAI-compatible ``/v1`` one, or the chat one."""


def guard_request(access: AccessConfig, request: Request, surface: Surface) -> None:
    """Every check a chatstream route makes before it acts (once per request)."""
    if request.scope.get(_GUARDED):
        return
    protected = surface == "v1" or access.api_keys_scope == "all"
    if access.api_keys and protected and request.url.path not in PROBES:
        check_api_key(access, request)
    if request.method not in SAFE_METHODS:
        check_same_site(request, access.allowed_origins)
        check_json_body(request)
    request.scope[_GUARDED] = True


def check_api_key(access: AccessConfig, request: Request) -> None:
    """Refuse (401) a request without one of the API keys as its Bearer token. The token's
    digest is compared, in constant time, with every key's, so timing tells nothing of any."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    given = key_digest(token.strip())
    matched = False
    for digest in access.key_digests:
        matched |= hmac.compare_digest(given, digest)
    if scheme.lower() != "bearer" or not matched:
        raise Unauthorized("this API needs a valid key: Authorization: Bearer <key>")


def check_same_site(request: Request, allowed_origins: Collection[str] = ()) -> None:
    """Refuse (403 ``forbidden_origin``) a request sent by another site."""
    origin = request.headers.get("origin")
    if origin is not None and origin.rstrip("/") in allowed_origins:
        return
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        if fetch_site in ("same-origin", "none"):
            return
    elif origin is None or _same_origin(origin, request):
        return
    raise ForbiddenOrigin("cross-site requests are not accepted")


def _same_origin(origin: str, request: Request) -> bool:
    parts = urlsplit(origin)
    host = request.headers.get("host", "")
    return parts.netloc.lower() == host.lower() and parts.scheme in ("http", "https")


def check_json_body(request: Request) -> None:
    """Refuse (415 ``unsupported_media_type``) a body that is not declared as JSON. A request
    with no body and no content type (``POST /clear_context``) passes."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json":
        return
    bodiless = request.headers.get("content-length", "0") == "0"
    if not media_type and bodiless and "transfer-encoding" not in request.headers:
        return
    raise UnsupportedMediaType("the request body must be JSON (Content-Type: application/json)")


class HostGuard:
    """Answers ``400 invalid_host`` to requests whose ``Host`` header is not in
    ``allowed_hosts`` (names, with or without a port; ``"*"`` allows any)."""

    def __init__(self, app: ASGIApp, allowed_hosts: Collection[str]) -> None:
        self.app = app
        self.any = "*" in allowed_hosts
        self.allowed = {_host_name(host.lower()) for host in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.any or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = Headers(scope=scope).get("host", "").lower()
        if host in self.allowed or _host_name(host) in self.allowed:
            await self.app(scope, receive, send)
            return
        await error_response(InvalidHost("this server does not answer to that host name"))(
            scope, receive, send
        )


def _host_name(host: str) -> str:
    """``host`` without its port, and an IPv6 address without its brackets."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host
