"""The session cookie: its name, when it is Secure, reading it from a request, writing it.

On a secure request the cookie is named ``__Host-<name>`` when the path is ``/`` and there is
no domain: browsers then accept it only from a secure origin, for this very host, with
``Secure`` and ``Path=/``, so neither a sibling subdomain nor a plain-http page can plant or
overwrite it. A cookie issued under the plain name before is still read on such a request, so
the middleware can re-issue it under the prefixed name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from starlette.datastructures import Headers
from starlette.requests import cookie_parser

from sessions.signing import CookieSigner
from sessions.types import Scope

HOST_PREFIX = "__Host-"


@dataclass(frozen=True, slots=True)
class Presented:
    """A validly signed session cookie a request carried, and the name it came under."""

    name: str
    session_id: str


class SessionCookie:
    """How one app names, verifies and writes its session cookie."""

    def __init__(
        self,
        secret_key: str | Sequence[str],
        *,
        max_age: float | None,
        name: str,
        same_site: Literal["lax", "strict", "none"],
        https_only: bool,
        path: str,
        domain: str | None,
        trust_forwarded_proto: bool,
        host_prefix: bool,
    ) -> None:
        self.signer = CookieSigner(secret_key, max_age=max_age)
        self.plain_name = name
        self.https_only = https_only
        self.trust_forwarded_proto = trust_forwarded_proto
        self.host_prefix = host_prefix and path == "/" and domain is None
        self.attributes = f"Path={path}; HttpOnly; SameSite={same_site.capitalize()}"
        if domain is not None:
            self.attributes += f"; Domain={domain}"

    def is_secure(self, scope: Scope) -> bool:
        if self.https_only or scope.get("scheme") == "https":
            return True
        if not self.trust_forwarded_proto:
            return False
        forwarded = Headers(scope=scope).get("x-forwarded-proto", "")
        return forwarded.split(",")[0].strip().lower() == "https"

    def name(self, secure: bool) -> str:
        """The name the cookie is issued under on a secure request or not."""
        return HOST_PREFIX + self.plain_name if secure and self.host_prefix else self.plain_name

    def read(self, scope: Scope, secure: bool) -> Presented | None:
        """The first validly signed session cookie of the request: under :meth:`name`, else
        under the plain name (issued before the prefix applied)."""
        cookies = cookie_parser(Headers(scope=scope).get("cookie", ""))
        for name in dict.fromkeys((self.name(secure), self.plain_name)):
            value = cookies.get(name)
            session_id = self.signer.unsign(value) if value else None
            if session_id is not None:
                return Presented(name, session_id)
        return None

    def header(self, name: str, session_id: str | None, secure: bool) -> tuple[bytes, bytes]:
        """A ``Set-Cookie`` header that makes ``name`` carry ``session_id``, or expires it."""
        max_age: int | None
        if session_id is None:
            value, max_age = "", 0
        else:
            value, max_age = self.signer.sign(session_id), self.signer.max_age
        attributes = [f"{name}={value}", self.attributes]
        if max_age is not None:
            attributes.append(f"Max-Age={max_age}")
        if secure:
            attributes.append("Secure")
        return b"set-cookie", "; ".join(attributes).encode("latin-1")
