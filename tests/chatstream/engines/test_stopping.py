from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from types import FrameType
from typing import TYPE_CHECKING, Any

from hypothesis import given
from hypothesis import strategies as st

from chatstream.engines import stopping
from chatstream.engines.stopping import StopStringFilter

if TYPE_CHECKING:
    from _typeshed import TraceFunction


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


def test_a_later_stop_string_that_starts_first_wins() -> None:
    stops = StopStringFilter(["bc", "abcd"])
    assert feed(stops, ["xabcd"]) == ["x"]


def test_the_earliest_stop_is_found_across_deltas() -> None:
    stops = StopStringFilter(["abcd", "bc"])
    assert feed(stops, ["xab", "cdy"]) == ["x", ""]
    assert stops.stopped


def test_a_long_delta_against_long_stop_strings() -> None:
    stop = "a" * 63 + "b"
    stops = StopStringFilter([stop, "c" * 64])
    text = "a" * 200_000
    assert stops.push(text) == "a" * (200_000 - 63)
    assert stops.push("a" * 10 + "b!") == "a" * 10
    assert stops.stopped


class QuadraticFilter:
    """The previous implementation, as the specification: the held text is searched again on
    every delta (quadratic in the length of the stop strings)."""

    def __init__(self, stop_strings: Iterable[str]) -> None:
        self._stop_strings = tuple(dict.fromkeys(s for s in stop_strings if s))
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> str:
        if self.stopped:
            return ""
        text = self._held + text
        hits = [i for s in self._stop_strings if (i := text.find(s)) >= 0]
        if hits:
            self.stopped = True
            self._held = ""
            return text[: min(hits)]
        keep = len(text) - max(
            (
                n
                for s in self._stop_strings
                for n in range(min(len(s) - 1, len(text)), 0, -1)
                if text.endswith(s[:n])
            ),
            default=0,
        )
        self._held = text[keep:]
        return text[:keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


@given(
    stop_strings=st.lists(st.text("abc", max_size=6), max_size=4),
    deltas=st.lists(st.text("abcd", max_size=9), max_size=12),
)
def test_it_emits_exactly_what_the_previous_implementation_did(
    stop_strings: list[str], deltas: list[str]
) -> None:
    linear, quadratic = StopStringFilter(stop_strings), QuadraticFilter(stop_strings)
    for delta in deltas:
        assert linear.push(delta) == quadratic.push(delta)
        assert linear.stopped == quadratic.stopped
    assert linear.flush() == quadratic.flush()


def lines_run(run: Callable[[], object]) -> int:
    """How many lines of ``chatstream.engines.stopping`` ``run`` executes: the work it does,
    counted exactly (no clock)."""
    count = 0

    def in_module(frame: FrameType, event: str, arg: Any) -> TraceFunction | None:
        return count_line if frame.f_code.co_filename == stopping.__file__ else None

    def count_line(frame: FrameType, event: str, arg: Any) -> TraceFunction:
        nonlocal count
        count += event == "line"
        return count_line

    previous = sys.gettrace()
    sys.settrace(in_module)
    try:
        run()
    finally:
        sys.settrace(previous)
    return count


def test_the_work_is_linear_in_the_text_held_back() -> None:
    """A tail that keeps matching a long stop string's start is held back, one character more
    per delta: re-searching it on each delta costs its length every time."""

    def work(n: int) -> int:
        stops = StopStringFilter(["a" * n + "b"])
        return lines_run(lambda: [stops.push("a") for _ in range(2 * n)])

    small, large = work(250), work(1000)
    assert large <= 4.5 * small  # four times the text: four times the work, not sixteen
    assert large <= 50 * 2000  # a few dozen lines per character
