"""Stop strings over a stream of text deltas."""

from __future__ import annotations

from collections.abc import Iterable


class StopStringFilter:
    """Passes text through until a stop string appears; the stop string is never emitted.

    A tail that could be the start of a stop string is held back until the next delta shows
    whether it is one. ``stopped`` is set once a stop string has been seen; after that,
    nothing more is emitted.
    """

    def __init__(self, stop_strings: Iterable[str]) -> None:
        self._stop_strings = tuple(dict.fromkeys(s for s in stop_strings if s))
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> str:
        """Add a delta; return the text that is now safe to emit."""
        if self.stopped:
            return ""
        text = self._held + text
        hits = [i for s in self._stop_strings if (i := text.find(s)) >= 0]
        if hits:
            self.stopped = True
            self._held = ""
            return text[: min(hits)]
        keep = len(text) - self._possible_stop_start(text)
        self._held = text[keep:]
        return text[:keep]

    def flush(self) -> str:
        """The held-back tail, at the end of the stream (it can no longer become a stop)."""
        held, self._held = self._held, ""
        return held

    def _possible_stop_start(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        return max(
            (
                n
                for s in self._stop_strings
                for n in range(min(len(s) - 1, len(text)), 0, -1)
                if text.endswith(s[:n])
            ),
            default=0,
        )
