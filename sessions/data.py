"""A session's values: decoded on first read, compared field by field with what the store holds.

A stored value that cannot be read whole (a segment lost in a failover, an unregistered type,
text that is not JSON) is absent: ``key in data`` is false and ``data.get(key)`` gives the
default. It is logged once, left in the store as it is (an instance that does not know a type
yet must not destroy it), and replaced whole when the app assigns the key again. Without that, a
damaged value would answer every request of its session with a 500, and each of them would
renew the session's idle timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from sessions.errors import SerializationError
from sessions.serializer import (
    SEGMENT_SEPARATOR,
    dump_fields,
    fields_to_write,
    group_fields,
    load_fields,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Encoded:
    """A stored value not read yet: its fields as the store holds them."""

    fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class _Unreadable:
    """A stored value that could not be read whole: kept as it is, invisible."""

    fields: dict[str, str]


class SessionData(MutableMapping[str, Any]):
    """The session's values, each decoded from JSON on first access.

    ``stored`` is the JSON the store holds, field by field (a key's value is one field, or
    several for a segmented type); comparing it with the current values re-encoded finds every
    change, in-place mutations included. Values never read are never decoded nor re-encoded.

    Values given with :meth:`provide` are seen under their key for this request only: they are
    never stored and do not count as data, and the app assigning the key stores a value in
    their place. Iterating (and ``len``) reads every value, to leave out unreadable ones.
    """

    def __init__(self, stored: Mapping[str, str] | None = None) -> None:
        self._provided: dict[str, Any] = {}
        self.reset(stored or {})

    def reset(self, stored: Mapping[str, str]) -> None:
        """Hold the record ``stored`` (the values provided for this request stay)."""
        self.stored = dict(stored)
        self._items: dict[str, Any] = {}
        for key, fields in group_fields(stored).items():
            if key in fields:
                self._items[key] = _Encoded(fields)
            else:  # segments whose head is gone: deleted by the next save
                logger.warning("session value %r has lost its head; dropped", key)

    @property
    def has_data(self) -> bool:
        """True when there are values to store (provided ones do not count)."""
        return bool(self._items)

    def provide(self, key: str, value: Any) -> None:
        _check_key(key)
        self._provided[key] = value

    def __getitem__(self, key: str) -> Any:
        if key in self._provided:
            return self._provided[key]
        value = self._items[key]
        if isinstance(value, _Unreadable):
            raise KeyError(key)
        if isinstance(value, _Encoded):
            try:
                value = self._items[key] = load_fields(key, value.fields)
            except SerializationError as exc:
                logger.warning("session value %r cannot be read; treated as absent: %s", key, exc)
                self._items[key] = _Unreadable(value.fields)
                raise KeyError(key) from None
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        _check_key(key)
        self._items[key] = value
        self._provided.pop(key, None)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._provided.pop(key, None)
        self._items.pop(key, None)

    def __iter__(self) -> Iterator[str]:
        for key in list(self._items):
            if key not in self._provided and key in self:
                yield key
        yield from list(self._provided)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def clear(self) -> None:
        self._items.clear()
        self._provided.clear()

    def encoded(self) -> dict[str, str]:
        """Every current value as the fields of JSON the store would hold."""
        fields: dict[str, str] = {}
        for key, value in self._items.items():
            if isinstance(value, _Encoded | _Unreadable):
                fields.update(value.fields)
            else:
                fields.update(dump_fields(key, value))
        return fields

    def changes(self) -> tuple[dict[str, str], list[str], dict[str, str]]:
        """What a save writes and deletes to make the store hold the current values, and the
        fields it then holds."""
        stored = group_fields(self.stored)
        changed: dict[str, str] = {}
        current: dict[str, str] = {}
        for key, value in self._items.items():
            if isinstance(value, _Encoded | _Unreadable):
                current.update(value.fields)
                continue
            fields = dump_fields(key, value)
            current.update(fields)
            changed.update(fields_to_write(key, stored.get(key, {}), fields))
        deleted = [field for field in self.stored if field not in current]
        return changed, deleted, current


def _check_key(key: object) -> None:
    if not isinstance(key, str) or SEGMENT_SEPARATOR in key:
        raise TypeError(f"session keys are strings without {SEGMENT_SEPARATOR!r}: {key!r}")
