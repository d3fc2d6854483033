"""Segmented types: a long list in a session value is stored one field per element."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis

from sessions import SerializationError, Session, register_type
from sessions.serializer import SEGMENT_SEPARATOR, dump_fields, fields_to_write, load_fields

from .test_handle import RecordingStore


@dataclass
class Log:
    title: str = "log"
    entries: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "entries": self.entries}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Log:
        return cls(data["title"], list(data["entries"]))


register_type(Log, "tests.Log", segmented="entries")


@pytest.fixture
def recording(redis: Redis) -> RecordingStore:
    return RecordingStore(redis)


def test_fields_round_trip() -> None:
    log = Log("notes", [{"n": 1}, {"n": 2}])
    fields = dump_fields("log", log)
    assert sorted(fields) == ["log", f"log{SEGMENT_SEPARATOR}0", f"log{SEGMENT_SEPARATOR}1"]
    assert load_fields("log", fields) == log


def segments(count: int, title: str = "log") -> dict[str, str]:
    return dump_fields("log", Log(title, [{"n": n} for n in range(count)]))


@pytest.mark.parametrize(
    ("old", "new", "written"),
    [
        (segments(3), segments(5), ["log", "log\x1f3", "log\x1f4"]),
        (segments(3), {**segments(3), "log\x1f1": '{"n":"edited"}'}, ["log\x1f1"]),
        (segments(3), segments(3, "renamed"), ["log", "log\x1f0", "log\x1f1", "log\x1f2"]),
        (segments(3), segments(2), ["log", "log\x1f0", "log\x1f1"]),
        (segments(3), {**segments(4), "log\x1f0": '{"n":"edited"}'}, sorted(segments(4))),
        ({"log": "[1]"}, segments(1), ["log", "log\x1f0"]),
        (segments(0), segments(1), ["log", "log\x1f0"]),
        ({}, segments(2), ["log", "log\x1f0", "log\x1f1"]),
    ],
    ids=[
        "append",
        "edit with the same head",
        "head changed",
        "shrunk",
        "grown and edited",
        "became segmented",
        "first segment",
        "new",
    ],
)
def test_what_a_save_writes(old: dict[str, str], new: dict[str, str], written: list[str]) -> None:
    assert sorted(fields_to_write("log", old, new)) == written


def test_growing_over_a_missing_segment_writes_the_value_whole() -> None:
    damaged = segments(3)
    del damaged[f"log{SEGMENT_SEPARATOR}1"]
    assert fields_to_write("log", damaged, segments(4)) == segments(4)


def test_a_missing_segment_is_a_serialization_error() -> None:
    fields = dump_fields("log", Log(entries=[{"n": 1}, {"n": 2}]))
    del fields[f"log{SEGMENT_SEPARATOR}1"]
    with pytest.raises(SerializationError):
        load_fields("log", fields)


async def test_appending_writes_only_the_new_element(recording: RecordingStore) -> None:
    session = Session(recording)
    session.get_session()["log"] = Log(entries=[{"n": i} for i in range(100)])
    await session.save_session()
    loaded = Session(
        recording, session.get_session_id(), await recording.load(session.get_session_id())
    )
    log = loaded.get_session()["log"]
    assert log == Log(entries=[{"n": i} for i in range(100)])
    log.entries.append({"n": 100})
    await loaded.save_session()
    changed, deleted = recording.saves[-1]
    assert changed == {
        "log": dump_fields("log", log)["log"],
        f"log{SEGMENT_SEPARATOR}100": '{"n":100}',
    }
    assert deleted == []


async def test_shrinking_deletes_the_extra_fields(recording: RecordingStore) -> None:
    session = Session(recording)
    session.get_session()["log"] = Log(entries=[{"n": 1}, {"n": 2}, {"n": 3}])
    await session.save_session()
    session.get_session()["log"].entries[1:] = []
    await session.save_session()
    _, deleted = recording.saves[-1]
    assert sorted(deleted) == [f"log{SEGMENT_SEPARATOR}1", f"log{SEGMENT_SEPARATOR}2"]
    stored = await recording.load(session.get_session_id())
    assert stored is not None
    assert Session(recording, session.get_session_id(), stored).get_session()["log"].entries == [
        {"n": 1}
    ]


def test_keys_with_the_separator_are_refused(recording: RecordingStore) -> None:
    with pytest.raises(TypeError):
        Session(recording).get_session()[f"a{SEGMENT_SEPARATOR}0"] = 1
