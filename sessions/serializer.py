"""Session values as JSON, with an explicit allow-list of registered types. Never pickle.

A registered object is written as ``{"__type__": name, "data": obj.to_dict()}`` and read back
with ``cls.from_dict(data)``. A plain dict whose keys are exactly ``__type__`` and ``data`` is
therefore reserved. ``dumps`` is deterministic, so comparing its output detects changes.

A type registered with ``segmented="items"`` is stored as several fields when it is a session
value: a head field under the session key, and one field per element of its ``items`` list
(``key<US>0``, ``key<US>1``, … with US = ``\x1f``). Appending to a long list then writes one
small field, not the whole value again; any other change of the head rewrites every field, so
a value is never left as a new head over segments it did not write.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol, Self, TypeVar

from sessions.errors import SerializationError


class Serializable(Protocol):
    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self: ...


T = TypeVar("T", bound=Serializable)

_TYPE_KEY = "__type__"
_DATA_KEY = "data"
_SEGMENTS_KEY = "__segments__"
SEGMENT_SEPARATOR = "\x1f"
_types_by_name: dict[str, type[Serializable]] = {}
_names_by_type: dict[type[Serializable], str] = {}
_segmented_by_type: dict[type[Serializable], str] = {}


def register_type(
    cls: type[T], name: str | None = None, *, segmented: str | None = None
) -> type[T]:
    """Allow instances of ``cls`` in sessions, stored under ``name`` (default: the class name).

    Usable as a class decorator. The name is what gets stored, so keep it stable across
    refactors; registering a different class under a taken name raises ``ValueError``.
    ``segmented`` names a list in ``to_dict()`` whose elements are stored one field each.
    """
    name = name or cls.__name__
    registered = _types_by_name.get(name)
    if registered is not None and registered is not cls:
        raise ValueError(f"session type name {name!r} is already registered to {registered!r}")
    _types_by_name[name] = cls
    _names_by_type[cls] = name
    if segmented is not None:
        _segmented_by_type[cls] = segmented
    return cls


def _encode(value: Any) -> dict[str, Any]:
    name = _names_by_type.get(type(value))
    if name is None:
        raise SerializationError(
            f"{type(value).__qualname__} is not JSON and not a registered session type"
        )
    return {_TYPE_KEY: name, _DATA_KEY: value.to_dict()}


def _decode(obj: dict[str, Any]) -> Any:
    if obj.keys() != {_TYPE_KEY, _DATA_KEY}:
        return obj
    cls = _types_by_name.get(obj[_TYPE_KEY])
    if cls is None:
        raise SerializationError(f"unknown session type {obj[_TYPE_KEY]!r}")
    try:
        return cls.from_dict(obj[_DATA_KEY])
    except (KeyError, TypeError, ValueError) as exc:
        raise SerializationError(f"cannot restore {obj[_TYPE_KEY]!r}: {exc}") from exc


def dumps(value: Any) -> str:
    """``value`` as compact JSON; raises ``SerializationError`` for anything else."""
    try:
        return json.dumps(
            value, default=_encode, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"session value is not JSON: {exc}") from exc


def loads(text: str) -> Any:
    """The value ``dumps`` wrote; raises ``SerializationError`` for invalid or unknown data."""
    try:
        return json.loads(text, object_hook=_decode)
    except ValueError as exc:
        raise SerializationError(f"stored session value is not valid JSON: {exc}") from exc


def dump_fields(key: str, value: Any) -> dict[str, str]:
    """The store fields of the session value under ``key``: one, or a segmented type's head
    and one field per element."""
    attribute = _segmented_by_type.get(type(value))
    if attribute is None:
        return {key: dumps(value)}
    data = value.to_dict()
    items = data.pop(attribute, None)
    if not isinstance(items, list):
        raise SerializationError(f"{type(value).__qualname__}.{attribute} is not a list")
    head = {
        _TYPE_KEY: _names_by_type[type(value)],
        _DATA_KEY: data,
        _SEGMENTS_KEY: [attribute, len(items)],
    }
    fields = {key: dumps(head)}
    fields.update({segment_field(key, index): dumps(item) for index, item in enumerate(items)})
    return fields


def load_fields(key: str, fields: Mapping[str, str]) -> Any:
    """The value ``dump_fields(key, ...)`` wrote as ``fields``."""
    head = loads(fields[key])
    if not (isinstance(head, dict) and head.keys() == {_TYPE_KEY, _DATA_KEY, _SEGMENTS_KEY}):
        return head
    try:
        attribute, count = head[_SEGMENTS_KEY]
        items = [loads(fields[segment_field(key, index)]) for index in range(count)]
    except (KeyError, TypeError, ValueError) as exc:
        raise SerializationError(f"stored session value {key!r} is incomplete") from exc
    return _decode({_TYPE_KEY: head[_TYPE_KEY], _DATA_KEY: {**head[_DATA_KEY], attribute: items}})


def fields_to_write(key: str, old: Mapping[str, str], new: Mapping[str, str]) -> dict[str, str]:
    """The fields of ``new`` (the value under ``key``) a save writes over ``old`` (what the store
    held of it, possibly damaged): the changed ones while the head is unchanged; the head and
    the new segments when the value only grew; otherwise all of them."""
    if old.get(key) == new[key]:
        return {field: text for field, text in new.items() if old.get(field) != text}
    appended = _appended(key, old, new)
    if appended is None:
        return dict(new)
    return {key: new[key], **{field: new[field] for field in appended}}


def _appended(key: str, old: Mapping[str, str], new: Mapping[str, str]) -> list[str] | None:
    """The segment fields ``new`` adds when it is ``old`` with segments appended, else None."""
    old_head, new_head = _split_head(old.get(key)), _split_head(new[key])
    if old_head is None or new_head is None:
        return None
    (old_rest, old_count), (new_rest, new_count) = old_head, new_head
    if old_rest != new_rest or old_count >= new_count:
        return None
    for index in range(old_count):
        if old.get(segment_field(key, index)) != new[segment_field(key, index)]:
            return None
    return [segment_field(key, index) for index in range(old_count, new_count)]


def _split_head(text: str | None) -> tuple[dict[str, Any], int] | None:
    """A segmented head, as plain JSON without its segment count, and the count; else None."""
    try:
        head = None if text is None else json.loads(text)
    except ValueError:
        return None
    if not (isinstance(head, dict) and head.keys() == {_TYPE_KEY, _DATA_KEY, _SEGMENTS_KEY}):
        return None
    segments = head[_SEGMENTS_KEY]
    if not (isinstance(segments, list) and len(segments) == 2 and type(segments[1]) is int):
        return None
    return {**head, _SEGMENTS_KEY: segments[0]}, segments[1]


def group_fields(fields: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``fields`` grouped by the session key they belong to."""
    groups: dict[str, dict[str, str]] = {}
    for field, text in fields.items():
        groups.setdefault(field.split(SEGMENT_SEPARATOR, 1)[0], {})[field] = text
    return groups


def segment_field(key: str, index: int) -> str:
    return f"{key}{SEGMENT_SEPARATOR}{index}"
