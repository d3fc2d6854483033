"""Who owns a conversation: the signed-in user when there is one, else the visitor's session.

Signed in follows Starlette's convention: ``request.user.is_authenticated``, with
``request.user.identity`` (or, when a user class does not implement it, ``display_name``) as
the id, as set by ``AuthenticationMiddleware`` or any layer that fills ``scope["user"]``.
``ChatStream(owner=fn)`` replaces that rule: ``fn(request)`` returns the user's id, or ``None``
for an anonymous visitor.

Owners are strings: ``user:<id>`` for a user, ``anon:<random id>`` for a visitor; the random id
lives in the visitor's session (never the session id itself, which stays a secret of the cookie),
so it survives the session id's rotation, and the visitor's conversations move to the user when
the visitor signs in.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from starlette.requests import HTTPConnection

OwnerRule = Callable[[HTTPConnection], str | None]
"""``fn(request)``: the signed-in user's id, or ``None`` for an anonymous visitor."""

_USER, _ANONYMOUS = "user:", "anon:"


def signed_in_user(connection: HTTPConnection) -> str | None:
    """Starlette's convention: the id of ``request.user`` when it is authenticated."""
    user = connection.scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    try:
        identity = user.identity
    except (AttributeError, NotImplementedError):  # Starlette's SimpleUser has none
        identity = None
    name = identity or getattr(user, "display_name", None)
    return str(name) if name else None


def user_owner(user_id: str) -> str:
    return _USER + user_id


def new_anonymous_owner() -> str:
    return _ANONYMOUS + secrets.token_hex(16)


def is_anonymous(owner: str) -> bool:
    return owner.startswith(_ANONYMOUS)
