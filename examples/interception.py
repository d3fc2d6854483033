"""Interception: the endpoint reads the body itself (to log or check it), then passes it on.

CHATSTREAM_MODEL=mock uvicorn examples.interception:app
"""

from __future__ import annotations

import json
import logging
import os

from fastapi import FastAPI, Request
from starlette.responses import Response

from chatstream import ChatStream
from chatstream.redis_client import connect_redis
from sessions import RedisSessionStore, SessionMiddleware

logger = logging.getLogger("examples.interception")

redis = connect_redis(os.environ.get("REDIS_URL"))
KEY = os.environ.get("CHATSTREAM_SECRET_KEY", "change-me-dev-only")

chat_stream = ChatStream.from_pretrained(os.environ.get("CHATSTREAM_MODEL"))
app = FastAPI()
app.add_middleware(SessionMiddleware, store=RedisSessionStore(redis), secret_key=KEY)


@app.post("/chat_stream")
async def stream_api(request: Request) -> Response:
    request_body = await request.body()
    try:
        data = json.loads(request_body)
        logger.info("user_input=%r regenerate=%r", data.get("user_input"), data.get("regenerate"))
    except (ValueError, AttributeError):
        logger.info("a body that is not a JSON object; chatstream answers it with a 4xx")
    return await chat_stream.handle_chat_stream_request(request, request_body)
