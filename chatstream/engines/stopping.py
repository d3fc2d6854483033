"""Stop strings over a stream of text deltas, in time linear in the text.

The stop strings are compiled once into an Aho-Corasick automaton whose state, carried from one
delta to the next, is the longest tail of the text that could still grow into a stop string.
Each new character costs amortized O(1), however long the stop strings and the text held back
(re-searching the held-back text on every delta was quadratic: one delta cost 184 ms with a
60K-character stop string). The text held back is kept in pieces and never copied until it is
emitted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class StopStringFilter:
    """Passes text through until a stop string appears; the stop string is never emitted.

    A tail that could be the start of a stop string is held back until the next delta shows
    whether it is one. When a delta completes stop strings, the one that starts first wins.
    ``stopped`` is set once a stop string has been seen; after that, nothing more is emitted.
    """

    def __init__(self, stop_strings: Iterable[str]) -> None:
        self._automaton = _Automaton(s for s in stop_strings if s)
        self._state = 0
        self._held: deque[str] = deque()  # the text held back, in the pieces it came in
        self._held_start = 0  # how much of the first piece was emitted already
        self._held_length = 0
        self.stopped = False

    def push(self, text: str) -> str:
        """Add a delta; return the text that is now safe to emit."""
        if self.stopped or not text:
            return ""
        automaton, state = self._automaton, self._state
        if not automaton.goto[0]:  # no stop strings
            return text
        end = self._held_length  # the position, in the held text plus this delta, of each char
        stop = -1  # where the earliest stop string found starts
        for char in text:
            state = automaton.step(state, char)
            end += 1
            if (length := automaton.match[state]) and (stop < 0 or end - length < stop):
                stop = end - length
            # A stop string that starts before the one found would be in progress now.
            if stop >= 0 and end - automaton.depth[state] >= stop:
                break
        self._held.append(text)
        self._held_length += len(text)
        if stop >= 0:
            self.stopped = True
            emitted = self._release(stop)
            self._forget()
            return emitted
        self._state = state
        return self._release(self._held_length - automaton.depth[state])

    def flush(self) -> str:
        """The held-back tail, at the end of the stream (it can no longer become a stop)."""
        tail = self._release(self._held_length)
        self._forget()
        return tail

    def _forget(self) -> None:
        """Drop the held text, and with it what the automaton matched so far."""
        self._held.clear()
        self._held_start = self._held_length = self._state = 0

    def _release(self, count: int) -> str:
        """Take the first ``count`` characters of the held text."""
        pieces = []
        self._held_length -= count
        while count:
            first = self._held[0]
            available = len(first) - self._held_start
            if available > count:
                pieces.append(first[self._held_start : self._held_start + count])
                self._held_start += count
                break
            pieces.append(first[self._held_start :] if self._held_start else first)
            self._held.popleft()
            self._held_start = 0
            count -= available
        return "".join(pieces)


class _Automaton:
    """An Aho-Corasick automaton over the stop strings.

    State 0 is the root; each state is a prefix of some stop string, ``depth`` long.
    ``match[s]`` is the length of the longest stop string that ends state ``s``'s text (0 if
    none): it starts earliest among those that end there.
    """

    def __init__(self, stop_strings: Iterable[str]) -> None:
        self.goto: list[dict[str, int]] = [{}]
        self.depth = [0]
        self.match = [0]
        self.fail = [0]
        for stop in dict.fromkeys(stop_strings):
            state = 0
            for char in stop:
                if char not in self.goto[state]:
                    self.goto.append({})
                    self.depth.append(self.depth[state] + 1)
                    self.match.append(0)
                    self.fail.append(0)
                    self.goto[state][char] = len(self.goto) - 1
                state = self.goto[state][char]
            self.match[state] = len(stop)
        # Breadth first, so that a state's failure (a shorter text) is done before it.
        queue = deque(self.goto[0].values())
        while queue:
            state = queue.popleft()
            for char, child in self.goto[state].items():
                queue.append(child)
                if state:
                    self.fail[child] = self.step(self.fail[state], char)
                if not self.match[child]:
                    self.match[child] = self.match[self.fail[child]]

    def step(self, state: int, char: str) -> int:
        """The state after ``char``: the longest prefix of a stop string that the text ends
        with."""
        while state and char not in self.goto[state]:
            state = self.fail[state]
        return self.goto[state].get(char, 0)
