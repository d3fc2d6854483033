"""The minimal app: one endpoint gives a multi-turn streaming chat with server-side history.

CHATSTREAM_MODEL=mock uvicorn examples.minimal:app        # or leave it unset: bundled model
"""

from __future__ import annotations

import os

from fastapi import FastAPI, Request
from starlette.responses import Response

from chatstream import ChatStream
from chatstream.redis_client import connect_redis
from sessions import RedisSessionStore, SessionMiddleware

redis = connect_redis(os.environ.get("REDIS_URL"))  # unset: the embedded in-process store
KEY = os.environ.get("CHATSTREAM_SECRET_KEY", "change-me-dev-only")

chat_stream = ChatStream.from_pretrained(os.environ.get("CHATSTREAM_MODEL"))
app = FastAPI()
app.add_middleware(SessionMiddleware, store=RedisSessionStore(redis), secret_key=KEY)


@app.post("/chat_stream")
async def stream_api(request: Request) -> Response:
    return await chat_stream.handle_chat_stream_request(request)
