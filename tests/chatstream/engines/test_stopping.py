from __future__ import annotations

from chatstream.engines.stopping import StopStringFilter


def feed(stops: StopStringFilter, pieces: list[str]) -> list[str]:
    return [stops.push(piece) for piece in pieces]


def test_text_without_stop_strings_passes_straight_through() -> None:
    stops = StopStringFilter(["STOP"])
    assert feed(stops, ["Hello", " world"]) == ["Hello", " world"]
    assert not stops.stopped


def test_stop_string_and_everything_after_it_are_dropped() -> None:
    stops = StopStringFilter(["STOP"])
    assert feed(stops, ["one ST", "OP two", " three"]) == ["one ", "", ""]
    assert stops.stopped
    assert stops.flush() == ""


def test_a_possible_stop_prefix_is_held_until_it_is_decided() -> None:
    stops = StopStringFilter(["world"])
    assert feed(stops, ["a w", "o", "k"]) == ["a ", "", "wok"]
    assert not stops.stopped


def test_the_held_tail_is_released_at_the_end() -> None:
    stops = StopStringFilter(["world"])
    assert feed(stops, ["hello wor"]) == ["hello "]
    assert stops.flush() == "wor"


def test_the_earliest_of_several_stop_strings_wins() -> None:
    stops = StopStringFilter(["bb", "cd", ""])
    assert feed(stops, ["aacdbb"]) == ["aa"]
    assert stops.stopped


def test_no_stop_strings_hold_nothing() -> None:
    stops = StopStringFilter([])
    assert feed(stops, ["a", "b"]) == ["a", "b"]
