"""Session values as JSON, with an explicit allow-list of registered types. Never pickle.

A registered object is written as ``{"__type__": name, "data": obj.to_dict()}`` and read back
with ``cls.from_dict(data)``. A plain dict whose keys are exactly ``__type__`` and ``data`` is
therefore reserved. ``dumps`` is deterministic, so comparing its output detects changes.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, Self, TypeVar

from sessions.errors import SerializationError


class Serializable(Protocol):
    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self: ...


T = TypeVar("T", bound=Serializable)

_TYPE_KEY = "__type__"
_DATA_KEY = "data"
_types_by_name: dict[str, type[Serializable]] = {}
_names_by_type: dict[type[Serializable], str] = {}


def register_type(cls: type[T], name: str | None = None) -> type[T]:
    """Allow instances of ``cls`` in sessions, stored under ``name`` (default: the class name).

    Usable as a class decorator. The name is what gets stored, so keep it stable across
    refactors; registering a different class under a taken name raises ``ValueError``.
    """
    name = name or cls.__name__
    registered = _types_by_name.get(name)
    if registered is not None and registered is not cls:
        raise ValueError(f"session type name {name!r} is already registered to {registered!r}")
    _types_by_name[name] = cls
    _names_by_type[cls] = name
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
