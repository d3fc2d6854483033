"""Completion callback: told how each stream ended, with the finished turn in the session.

CHATSTREAM_MODEL=mock uvicorn examples.callback:app
"""

from __future__ import annotations

import os

from fastapi import FastAPI, Request
from starlette.responses import Response

from chatstream import ChatStream, Outcome
from chatstream.redis_client import connect_redis
from sessions import RedisSessionStore, SessionMiddleware

redis = connect_redis(os.environ.get("REDIS_URL"))
KEY = os.environ.get("CHATSTREAM_SECRET_KEY", "change-me-dev-only")

chat_stream = ChatStream.from_pretrained(os.environ.get("CHATSTREAM_MODEL"))
app = FastAPI()
app.add_middleware(SessionMiddleware, store=RedisSessionStore(redis), secret_key=KEY)


async def on_complete(request: Request, message: Outcome) -> None:
    session = request.state.session.get_session()
    print(f"stream ended: {message}")
    if message == "success" and "chat_prompt" in session:
        print(session["chat_prompt"].create_prompt())


@app.post("/chat_stream")
async def stream_api(request: Request) -> Response:
    return await chat_stream.handle_chat_stream_request(request, callback=on_complete)
