"""Who a request is from, for the per-client limits (requests at once, turns per minute).

The signed-in user when there is one (the owner rule of :mod:`chatstream.conversations.owners`),
else, on ``/v1``, the API key it presents when that is one of the configured keys (a token
the server does not know proves nothing: anyone could send a new one with each request and
get a fresh cap each time); else the client's address, as uvicorn gives it: the
peer, or the ``X-Forwarded-For`` address when the peer is a proxy uvicorn trusts
(``FORWARDED_ALLOW_IPS``). Behind a proxy that is not trusted every visitor shares the proxy's
address: trust it, or turn the per-client cap off.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.requests import Request

from ..config import key_digest
from ..conversations.owners import OwnerRule
from .guard import Surface


def client_of(
    request: Request, surface: Surface, owner: OwnerRule, keys: Collection[bytes] = ()
) -> str:
    """The client ``request`` counts as; ``keys`` are the digests of the configured API keys."""
    user = owner(request)
    if user is not None:
        return f"user:{user}"
    if surface == "v1" and keys:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        digest = key_digest(token.strip())
        if scheme.lower() == "bearer" and digest in keys:
            return f"key:{digest.hex()[:32]}"
    return f"address:{request.client.host if request.client else 'unknown'}"
