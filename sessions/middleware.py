"""Server-side sessions for any ASGI app, addressed by a signed cookie."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse

from sessions.errors import SessionError, StoreUnavailable
from sessions.handle import Session
from sessions.signing import CookieSigner
from sessions.stores.base import SessionStore
from sessions.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)


class SessionMiddleware:
    """Puts a :class:`~sessions.handle.Session` at ``scope["state"]["session"]``.

    A cookie that fails verification, or names an id the store does not hold, starts a new
    session with a fresh id: a client never chooses its id. When the response starts, a cookie
    is sent if the client must learn a new id (the app used the new, rotated or cleared session
    before the response started; its data is written first) or forget its old one (the session
    was left empty). Changes are saved when the app sends the last body chunk, before it reaches
    the client, and again when the app returns, raises or loses its client; data first set on a
    new id after the response started is not kept (a warning is logged), since its cookie could
    not be sent. If the store is unreachable when loading, the app is not called: the answer is
    ``503 store_unavailable`` with ``Retry-After``.
    """

    def __init__(
        self,
        app: ASGIApp,
        store: SessionStore,
        secret_key: str | Sequence[str],
        *,
        cookie_name: str = "session",
        same_site: Literal["lax", "strict", "none"] = "lax",
        https_only: bool = False,
        path: str = "/",
        domain: str | None = None,
        trust_forwarded_proto: bool = False,
    ) -> None:
        self.app = app
        self.store = store
        self.signer = CookieSigner(secret_key, max_age=store.absolute_lifetime)
        self.cookie_name = cookie_name
        self.https_only = https_only
        self.trust_forwarded_proto = trust_forwarded_proto
        self.attributes = f"Path={path}; HttpOnly; SameSite={same_site.capitalize()}"
        if domain is not None:
            self.attributes += f"; Domain={domain}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        headers = Headers(scope=scope)
        cookie = cookie_parser(headers.get("cookie", "")).get(self.cookie_name)
        try:
            session = await self._load(cookie)
        except StoreUnavailable as exc:
            await self._unavailable(exc)(scope, receive, send)
            return
        scope.setdefault("state", {})["session"] = session
        # The id the client will present next time, as far as this response goes.
        client_id = None if session.is_new else session.get_session_id()
        secure = self._is_secure(scope, headers)

        async def send_with_session(message: Message) -> None:
            nonlocal client_id
            if message["type"] == "http.response.start" and session.get_session_id() != client_id:
                if session.in_use:
                    await self._save(session)
                    client_id = session.get_session_id()
                    self._add_cookie(message, client_id, secure)
                elif cookie is not None:
                    self._add_cookie(message, None, secure)
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                await save_if_reachable()
            await send(message)

        async def save_if_reachable() -> None:
            if session.get_session_id() == client_id:
                await self._save(session)
            elif session.get_session():
                logger.warning(
                    "session data not kept: the response went out without the new session's "
                    "cookie (the app failed, or set the first value after the response started)"
                )

        try:
            await self.app(scope, receive, send_with_session)
        finally:
            await save_if_reachable()

    async def _load(self, cookie: str | None) -> Session:
        session_id = self.signer.unsign(cookie) if cookie else None
        stored = await self.store.load(session_id) if session_id else None
        if stored is None:
            return Session(self.store)
        return Session(self.store, session_id, stored)

    async def _save(self, session: Session) -> None:
        try:
            await session.save_session()
        except SessionError:
            logger.exception("could not save session")

    def _is_secure(self, scope: Scope, headers: Headers) -> bool:
        if self.https_only or scope.get("scheme") == "https":
            return True
        forwarded = headers.get("x-forwarded-proto", "") if self.trust_forwarded_proto else ""
        return forwarded.split(",")[0].strip().lower() == "https"

    def _add_cookie(self, message: Message, session_id: str | None, secure: bool) -> None:
        """Set the cookie to carry ``session_id``, or expire it when ``None``."""
        max_age: int | None
        if session_id is None:
            value, max_age = "", 0
        else:
            value, max_age = self.signer.sign(session_id), self.signer.max_age
        attributes = [f"{self.cookie_name}={value}", self.attributes]
        if max_age is not None:
            attributes.append(f"Max-Age={max_age}")
        if secure:
            attributes.append("Secure")
        header = "; ".join(attributes).encode("latin-1")
        message["headers"] = [*message.get("headers", ()), (b"set-cookie", header)]

    def _unavailable(self, exc: StoreUnavailable) -> JSONResponse:
        return JSONResponse(
            {"error": {"code": "store_unavailable", "message": "session store unavailable"}},
            status_code=503,
            headers={"Retry-After": str(exc.retry_after)},
        )
