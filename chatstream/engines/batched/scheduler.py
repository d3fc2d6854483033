"""What the batched engine runs next: pure policy, with no torch and no threads.

As in vLLM, the scheduler only decides; the engine carries its decisions out (``kv`` lays out
the caches, ``runner`` runs the passes). It sees the sequences through what it needs of them
(whether their consumer left, and how many new prompt tokens they bring), so it is tested with
plain objects. Each turn of the engine's loop runs at most one prefill pass, then one decoding
step of the running rows:

- Waiting sequences are admitted in arrival order, up to the free slots, as one group whose
  padded new prompt tokens (its rows times the longest) fit ``prefill_tokens``; the first
  sequence always fits. No group is admitted while the previous one is still prefilling.
- A group is prefilled in chunks of ``prefill_tokens // rows`` columns (at least one), one
  chunk per turn, so the running rows keep decoding while a long prompt fills.
- When a group gets its first tokens and no other rows are decoding, and more sequences wait
  with slots free, the next group is prefilled before the ready group's first decoding step:
  in a burst, every group gets its first tokens soon, and rows that decode never wait for
  more than one prefill pass.
- A sequence whose consumer left is dropped before the next pass, wherever it is.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from ..config import BatchingConfig


class Schedulable(Protocol):
    @property
    def cancelled(self) -> bool:
        """Whether the consumer left."""
        ...


S = TypeVar("S", bound=Schedulable)


@dataclass(frozen=True, slots=True)
class Admission(Generic[S]):
    """The sequences that start prefilling together, in arrival order, and those that could
    not be measured (their prompt failed to tokenize: the engine ends them)."""

    group: list[S]
    failed: list[S]


class Scheduler:
    """The batching policy for ``config.slots`` rows and ``config.prefill_tokens`` per pass."""

    def __init__(self, config: BatchingConfig) -> None:
        self._slots = config.slots
        self._prefill_tokens = config.prefill_tokens

    def candidates(self, waiting: Iterable[S], running: int) -> list[S]:
        """The waiting sequences that may join the ``running`` ones: the first, up to the free
        slots."""
        return list(itertools.islice(waiting, max(self._slots - running, 0)))

    def admit(self, candidates: Iterable[S], new_tokens: Callable[[S], int | None]) -> Admission[S]:
        """The next prefill group from ``candidates``. ``new_tokens`` measures a sequence:
        its prompt tokens not found in a cache, or ``None`` if it cannot run. It is called in
        order, and not past the first sequence that does not fit."""
        group: list[S] = []
        failed: list[S] = []
        width = 0  # the group's new tokens per row, padded to the longest
        for sequence in candidates:
            tokens = new_tokens(sequence)
            if tokens is None:
                failed.append(sequence)
                continue
            wider = max(width, tokens)
            if group and wider * (len(group) + 1) > self._prefill_tokens:
                break
            group.append(sequence)
            width = wider
        return Admission(group, failed)

    def prefill_end(self, *, rows: int, done: int, width: int) -> int:
        """Where the next prefill pass of ``rows`` prompts ends: the cache column after its
        last, when ``done`` of the ``width`` columns are in the cache."""
        return min(width, done + max(1, self._prefill_tokens // rows))

    def next_group_first(self, *, ready: int, decoding: int, waiting: int) -> bool:
        """Whether the next group is prefilled before the first decoding step of the ``ready``
        rows that just got their first tokens, while ``decoding`` other rows run and
        ``waiting`` sequences wait."""
        return not decoding and waiting > 0 and ready < self._slots

    @staticmethod
    def partition(sequences: Sequence[S]) -> tuple[list[int], list[int]]:
        """The indices of the sequences that stay, and of those whose consumer left (they
        leave before the next pass)."""
        staying: list[int] = []
        leaving: list[int] = []
        for i, sequence in enumerate(sequences):
            (leaving if sequence.cancelled else staying).append(i)
        return staying, leaving
