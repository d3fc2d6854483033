"""Server-sent events as the tests read them: one parser for whole bodies and line streams."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    """One event: its ``event:`` name (``message`` when none), JSON ``data`` and ``id:``."""

    name: str
    data: Any
    id: str | None = None


def iter_events(lines: Iterable[str]) -> Iterator[Event]:
    """The events of a stream of lines (``httpx.Response.iter_lines()``); comments skipped."""
    name, event_id = "", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield Event(name or "message", json.loads("\n".join(data)), event_id)
            name, data, event_id = "", [], None
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                event_id = value
    if data:
        yield Event(name or "message", json.loads("\n".join(data)), event_id)


def parse_events(body: str) -> list[Event]:
    """The events of a whole ``text/event-stream`` body."""
    return list(iter_events(body.replace("\r\n", "\n").split("\n")))


def reply_text(events: Iterable[Event]) -> str:
    """The reply that ``delta`` events carry."""
    return "".join(event.data["text"] for event in events if event.name == "delta")
