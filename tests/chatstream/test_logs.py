from __future__ import annotations

import json
import logging
import sys

import httpx
import pytest

from chatstream.logs import JSONFormatter


async def test_each_stream_is_one_structured_record(
    chat: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatstream")
    response = await chat.post("/chat_stream", json={"user_input": "hi"})
    records = [r for r in caplog.records if r.getMessage().startswith("stream finished")]
    assert len(records) == 1
    entry = json.loads(JSONFormatter().format(records[0]))
    assert entry["message_id"] == response.headers["x-message-id"]
    assert entry["route"] == "/chat_stream"
    assert entry["outcome"] == "success"
    assert (entry["finish_reason"], entry["completion_tokens"]) == ("stop", 2)
    assert entry["duration_ms"] >= entry["queue_wait_ms"] >= 0
    assert f"message_id={entry['message_id']}" in entry["message"]
    session_id = chat.cookies["session"].split(".")[0]
    assert session_id not in caplog.text


def test_json_formatter_keeps_exceptions() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    entry = json.loads(JSONFormatter().format(record))
    assert (entry["level"], entry["message"]) == ("ERROR", "failed")
    assert "ValueError: boom" in entry["exception"]
