"""The session cookie: its name, when it is Secure, reading it from a request, writing it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from starlette.datastructures import Headers
from starlette.requests import cookie_parser

from sessions.signing import CookieSigner
from sessions.types import Scope


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
    ) -> None:
        self.signer = CookieSigner(secret_key, max_age=max_age)
        self.name = name
        self.https_only = https_only
        self.trust_forwarded_proto = trust_forwarded_proto
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

    def read(self, scope: Scope) -> str | None:
        """The session id the request's cookie carries, if validly signed."""
        value = cookie_parser(Headers(scope=scope).get("cookie", "")).get(self.name)
        return self.signer.unsign(value) if value else None

    def header(self, session_id: str | None, secure: bool) -> tuple[bytes, bytes]:
        """A ``Set-Cookie`` header that makes the cookie carry ``session_id``, or expires it."""
        max_age: int | None
        if session_id is None:
            value, max_age = "", 0
        else:
            value, max_age = self.signer.sign(session_id), self.signer.max_age
        attributes = [f"{self.name}={value}", self.attributes]
        if max_age is not None:
            attributes.append(f"Max-Age={max_age}")
        if secure:
            attributes.append("Secure")
        return b"set-cookie", "; ".join(attributes).encode("latin-1")
