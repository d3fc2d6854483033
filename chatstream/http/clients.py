"""Who a request is from, for the per-client limits (requests at once, turns per minute).

The signed-in user when there is one (the owner rule of :mod:`chatstream.conversations.owners`),
else, on ``/v1``, the API key it presents; else the client's address, as uvicorn gives it: the
peer, or the ``X-Forwarded-For`` address when the peer is a proxy uvicorn trusts
(``FORWARDED_ALLOW_IPS``). Behind a proxy that is not trusted every visitor shares the proxy's
address: trust it, or turn the per-client cap off.
"""

from __future__ import annotations

from starlette.requests import Request

from ..config import key_digest
from ..conversations.owners import OwnerRule
from .guard import Surface


def client_of(request: Request, surface: Surface, owner: OwnerRule) -> str:
    user = owner(request)
    if user is not None:
        return f"user:{user}"
    if surface == "v1":
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return f"key:{key_digest(token.strip()).hex()[:32]}"
    return f"address:{request.client.host if request.client else 'unknown'}"
