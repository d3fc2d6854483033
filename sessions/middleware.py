"""Server-side sessions for any ASGI app, addressed by a signed cookie."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from starlette.responses import JSONResponse

from sessions.cookie import Presented, SessionCookie
from sessions.errors import SessionError, StoreUnavailable
from sessions.handle import Session, SessionView
from sessions.stores.base import SessionStore
from sessions.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)


class SessionMiddleware:
    """Puts a :class:`~sessions.handle.Session` at ``scope["state"]["session"]``, and a view of
    its values at ``scope["session"]`` (Starlette's ``request.session``).

    With ``autoload`` (the default) the record is read before the app runs; if the store fails,
    the app is not called and the answer is ``503 store_unavailable`` with ``Retry-After``.
    Without it, the app reads it with ``await request.state.session.load()`` where it needs
    it, and a request that never does makes no store call, sets no cookie and saves nothing.

    A cookie that fails verification, or names an id the store does not hold, starts a new
    session with a fresh id: a client never chooses its id. A new id's cookie is sent when the
    response starts if the session holds data then (written first); a session that was only
    read sends none, so a new visitor's concurrent first requests never end on different ids.
    A live session the app cleared (or rotated while empty) expires its cookie. Changes are
    saved when the app sends the last body chunk, before it reaches the client, and again when
    the app returns, raises or loses its client; data first set on a new id after the response
    started is not kept (a warning is logged), since its cookie could not be sent.

    On a secure request the cookie is ``__Host-<cookie_name>`` (see :mod:`sessions.cookie`)
    unless ``host_prefix`` is off; a plain one issued before is honoured and re-issued.
    """

    def __init__(
        self,
        app: ASGIApp,
        store: SessionStore,
        secret_key: str | Sequence[str],
        *,
        autoload: bool = True,
        cookie_name: str = "session",
        same_site: Literal["lax", "strict", "none"] = "lax",
        https_only: bool = False,
        path: str = "/",
        domain: str | None = None,
        trust_forwarded_proto: bool = False,
        host_prefix: bool = True,
    ) -> None:
        self.app = app
        self.store = store
        self.autoload = autoload
        self.cookie = SessionCookie(
            secret_key,
            max_age=store.absolute_lifetime,
            name=cookie_name,
            same_site=same_site,
            https_only=https_only,
            path=path,
            domain=domain,
            trust_forwarded_proto=trust_forwarded_proto,
            host_prefix=host_prefix,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        secure = self.cookie.is_secure(scope)
        presented = self.cookie.read(scope, secure)
        session = Session.unloaded(self.store, presented.session_id if presented else None)
        if self.autoload:
            try:
                await session.load()
            except StoreUnavailable as exc:
                await self._unavailable(exc)(scope, receive, send)
                return
        scope.setdefault("state", {})["session"] = session
        scope["session"] = SessionView(session)
        # The id the client presents next time, once the response start settled it.
        settled = False
        client_id: str | None = None

        async def send_with_session(message: Message) -> None:
            nonlocal settled, client_id
            if message["type"] == "http.response.start" and session.loaded:
                client_id = await self._start_response(session, presented, secure, message)
                settled = True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                await save_if_reachable()
            await send(message)

        async def save_if_reachable() -> None:
            if not session.loaded:
                return
            holder = client_id if settled else _held(session, presented)
            if session.get_session_id() == holder:
                await self._save(session)
            elif session.has_data:
                logger.warning(
                    "session data not kept: the response went out without the new session's "
                    "cookie (the app failed, or set the first value after the response started)"
                )

        try:
            await self.app(scope, receive, send_with_session)
        finally:
            await save_if_reachable()

    async def _start_response(
        self, session: Session, presented: Presented | None, secure: bool, message: Message
    ) -> str | None:
        """Add the cookies the client needs as the response starts (saving a session it must
        learn the id of first); the id the client then holds."""
        name = self.cookie.name(secure)
        held = _held(session, presented)
        presented_name = presented.name if presented else name
        session_id = session.get_session_id()
        if session.has_data and (session_id != held or presented_name != name):
            await self._save(session)
            self._add_cookie(message, name, session_id, secure)
            if presented_name != name:
                self._add_cookie(message, presented_name, None, secure)
            held = session_id
        elif held is not None and session_id != held:
            self._add_cookie(message, presented_name, None, secure)
            held = None
        return held

    def _add_cookie(
        self, message: Message, name: str, session_id: str | None, secure: bool
    ) -> None:
        header = self.cookie.header(name, session_id, secure)
        message["headers"] = [*message.get("headers", ()), header]

    async def _save(self, session: Session) -> None:
        try:
            await session.save_session()
        except SessionError:
            logger.exception("could not save session")

    def _unavailable(self, exc: StoreUnavailable) -> JSONResponse:
        return JSONResponse(
            {"error": {"code": "store_unavailable", "message": "session store unavailable"}},
            status_code=503,
            headers={
                "Retry-After": str(exc.retry_after),
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )


def _held(session: Session, presented: Presented | None) -> str | None:
    """The live session id the request's cookie named (None for a new session)."""
    return presented.session_id if presented and not session.is_new else None
