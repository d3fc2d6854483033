"""Structured logs: every finished stream is one record with its ids, outcome and timings.

``chatstream serve --log-format json`` writes one JSON object per line; the default text format
puts the same fields in the message as ``key=value`` pairs. Session ids are never logged.
"""

from __future__ import annotations

import json
import logging
from typing import Any

STREAM_FIELDS = (
    "message_id",
    "route",
    "outcome",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "queue_wait_ms",
    "duration_ms",
)

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def log_stream(logger: logging.Logger, fields: dict[str, Any]) -> None:
    """One record for a finished stream, readable as text and as JSON."""
    text = " ".join(f"{key}={fields[key]}" for key in STREAM_FIELDS if key in fields)
    logger.info("stream finished %s", text, extra=fields)


class JSONFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
