"""Sign-in with Starlette's authentication: each user keeps their conversations on every device.

CHATSTREAM_MODEL=mock uvicorn examples.sign_in:app

``POST /login {"user", "password"}`` checks the password (here a fixed demo table; use your
identity provider, e.g. Authlib's OAuth client, which works on these server-side sessions as it
does on Starlette's) and keeps the user in the session; ``AuthenticationMiddleware`` makes it
``request.user`` on every request, and chatstream's conversations belong to that user. What a
visitor chatted before signing in moves to the user, and the session id is rotated.
"""

from __future__ import annotations

import hmac
import os

from fastapi import FastAPI, Request
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response

from chatstream import ChatStream
from chatstream.redis_client import connect_redis
from sessions import RedisSessionStore, SessionMiddleware

redis = connect_redis(os.environ.get("REDIS_URL"))
KEY = os.environ.get("CHATSTREAM_SECRET_KEY", "change-me-dev-only-0123456789abcdef")
USERS = {"alice": "wonderland", "bob": "builder"}  # a demo: never keep passwords like this


class SessionUser(AuthenticationBackend):
    """The user the login route kept in the session."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        user = conn.session.get("user")
        return (AuthCredentials(["authenticated"]), SimpleUser(user)) if user else None


chat_stream = ChatStream.from_pretrained(os.environ.get("CHATSTREAM_MODEL"))
app = FastAPI()


@app.post("/login")
async def login(request: Request) -> Response:
    body = await request.json()
    user, password = str(body.get("user", "")), str(body.get("password", ""))
    expected = USERS.get(user, "")
    if not expected or not hmac.compare_digest(password.encode(), expected.encode()):
        return JSONResponse(
            {"error": {"code": "unauthorized", "message": "wrong user or password"}}, 401
        )
    request.session["user"] = user
    return JSONResponse({"user": user})


@app.post("/logout")
async def logout(request: Request) -> Response:
    await request.state.session.clear_session()
    return JSONResponse({"status": "signed out"})


chat_stream.mount(app)
app.add_middleware(AuthenticationMiddleware, backend=SessionUser())
app.add_middleware(SessionMiddleware, store=RedisSessionStore(redis), secret_key=KEY)
