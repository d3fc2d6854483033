from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

import pytest

from sessions import SerializationError, dumps, loads, register_type


@register_type
@dataclass
class Basket:
    items: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"items": self.items}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Basket:
        return cls(items=list(data["items"]))


@dataclass
class Unregistered:
    def to_dict(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Unregistered:
        return cls()


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -1.5, "", "héllo ✓", [1, [2]], {"a": {"b": None}}, {"": []}],
)
def test_json_values_round_trip(value: Any) -> None:
    assert loads(dumps(value)) == value


def test_registered_types_round_trip_anywhere_in_a_value() -> None:
    value = {"baskets": [Basket(["apple"]), Basket()], "note": "x"}
    text = dumps(value)
    assert '"__type__":"Basket"' in text
    assert loads(text) == value


def test_dumps_is_stable_across_a_round_trip() -> None:
    text = dumps({"z": 1, "a": [Basket(["é"])], "f": 0.1})
    assert dumps(loads(text)) == text


def test_a_custom_name_is_what_gets_stored() -> None:
    @dataclass
    class Renamed:
        def to_dict(self) -> dict[str, Any]:
            return {}

        @classmethod
        def from_dict(cls, data: dict[str, Any]) -> Renamed:
            return cls()

    register_type(Renamed, "test_serializer.renamed")
    assert dumps(Renamed()) == '{"__type__":"test_serializer.renamed","data":{}}'
    assert loads(dumps(Renamed())) == Renamed()


def test_a_name_cannot_be_taken_twice() -> None:
    register_type(Basket)
    with pytest.raises(ValueError, match="already registered"):
        register_type(Unregistered, "Basket")


@pytest.mark.parametrize(
    "value", [Unregistered(), {1, 2}, b"bytes", float("nan"), {"key": object()}]
)
def test_values_that_are_not_json_are_refused(value: Any) -> None:
    with pytest.raises(SerializationError):
        dumps(value)


def test_circular_values_are_refused() -> None:
    value: list[Any] = []
    value.append(value)
    with pytest.raises(SerializationError):
        dumps(value)


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        '{"__type__": "NoSuchType", "data": {}}',
        '{"__type__": "Basket", "data": {"wrong": 1}}',
        pickle.dumps(Basket()).decode("latin-1"),
    ],
)
def test_unreadable_data_is_refused(text: str) -> None:
    with pytest.raises(SerializationError):
        loads(text)


def test_dicts_that_merely_mention_the_type_key_stay_dicts() -> None:
    value = {"__type__": "Basket", "other": 1}
    assert loads(dumps(value)) == value
