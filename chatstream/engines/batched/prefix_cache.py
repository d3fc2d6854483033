"""The KV caches of recent prompts, so that a prompt which starts like one of them is prefilled
only from where it differs.

Two kinds of prompt gain: those that share a start with another conversation's (the system
prompt and the chat template's first tokens), and a conversation's next turn, whose prompt
repeats the previous prompt and reply. :class:`~chatstream.engines.batched.BatchedEngine`
stores each row's prompt plus reply when it ends, and a prompt none of which was cached as soon
as it is prefilled; a stored sequence that starts a newer one is dropped for it. The least
recently used entries go when the cache is over its byte budget.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import count

import torch

KeysAndValues = list[tuple[torch.Tensor, torch.Tensor]]
"""One sequence's cache: per layer, keys and values shaped ``(heads, tokens, head_dim)``."""

MIN_TOKENS = 8
"""Shorter matches are not worth a separate cache layout; shorter sequences are not stored."""


@dataclass(frozen=True, slots=True)
class PrefixMatch:
    """The first ``tokens`` ids of a prompt, and their keys and values."""

    tokens: int
    layers: KeysAndValues


@dataclass(slots=True)
class _Entry:
    ids: torch.Tensor  # (tokens,), on the CPU
    layers: KeysAndValues
    nbytes: int


class PrefixCache:
    """Keys and values of token sequences, at most ``capacity_bytes`` of them (0: none kept).

    Used by one thread (the engine's worker); not thread-safe.
    """

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError("capacity_bytes must be >= 0")
        self.capacity_bytes = capacity_bytes
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # least recently used first
        self._keys = count()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def match(self, ids: Sequence[int]) -> PrefixMatch | None:
        """The longest stored start of ``ids``, leaving at least the last id to be run (the
        model must see a token to predict the next); ``None`` below :data:`MIN_TOKENS`."""
        if not self._entries or len(ids) <= MIN_TOKENS:
            return None
        query = torch.tensor(ids)
        best_key, best = -1, 0
        for key, entry in self._entries.items():
            common = min(_common_prefix(entry.ids, query), len(ids) - 1)
            if common > best:
                best_key, best = key, common
        if best < MIN_TOKENS:
            return None
        self._entries.move_to_end(best_key)
        layers = self._entries[best_key].layers
        return PrefixMatch(best, [(k[:, :best], v[:, :best]) for k, v in layers])

    def store(self, ids: Sequence[int], layers: KeysAndValues) -> None:
        """Keep ``layers``, the keys and values of ``ids`` (the cache owns the tensors now).

        What does not fit the budget is cut off at the end; an entry that ``ids`` starts with
        is dropped, and ``ids`` is not kept when an entry already starts with it.
        """
        if self.capacity_bytes == 0 or len(ids) < MIN_TOKENS:
            return
        per_token = _nbytes(layers) / len(ids)
        tokens = min(len(ids), int(self.capacity_bytes // per_token))
        if tokens < MIN_TOKENS:
            return
        if tokens < len(ids):
            layers = [(k[:, :tokens].clone(), v[:, :tokens].clone()) for k, v in layers]
        new = torch.tensor(ids[:tokens])
        for key, entry in list(self._entries.items()):
            common = _common_prefix(entry.ids, new)
            if common == len(new):  # already stored, maybe with more after it
                self._entries.move_to_end(key)
                return
            if common == len(entry.ids):  # the new sequence goes on from this one
                self._drop(key)
        entry = _Entry(new, layers, _nbytes(layers))
        self._entries[next(self._keys)] = entry
        self.nbytes += entry.nbytes
        while self.nbytes > self.capacity_bytes:
            self._drop(next(iter(self._entries)))

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0

    def _drop(self, key: int) -> None:
        self.nbytes -= self._entries.pop(key).nbytes


def _nbytes(layers: KeysAndValues) -> int:
    return sum(k.nbytes + v.nbytes for k, v in layers)


def _common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many leading ids ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    differ = (a[:n] != b[:n]).nonzero()
    return int(differ[0]) if len(differ) else n
