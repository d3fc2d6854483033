from __future__ import annotations

from dataclasses import dataclass

import pytest

from chatstream.engines.batched.scheduler import Scheduler
from chatstream.engines.config import BatchingConfig


@dataclass
class Waiting:
    """A sequence as the scheduler sees it: its new prompt tokens (``None``: it cannot run)."""

    name: str
    new_tokens: int | None = 10
    cancelled: bool = False


def measured(sequence: Waiting) -> int | None:
    return sequence.new_tokens


def scheduler(slots: int = 8, prefill_tokens: int = 256) -> Scheduler:
    return Scheduler(BatchingConfig(slots=slots, prefill_tokens=prefill_tokens))


def names(sequences: list[Waiting]) -> list[str]:
    return [sequence.name for sequence in sequences]


def test_candidates_are_the_first_waiting_up_to_the_free_slots() -> None:
    waiting = [Waiting(str(k)) for k in range(5)]
    assert names(scheduler(slots=4).candidates(waiting, running=1)) == ["0", "1", "2"]
    assert scheduler(slots=4).candidates(waiting, running=4) == []


def test_a_group_takes_sequences_in_order_while_their_padded_tokens_fit() -> None:
    """Rows times the longest row's new tokens must fit the budget."""
    waiting = [Waiting("a", 30), Waiting("b", 50), Waiting("c", 10), Waiting("d", 10)]
    admission = scheduler(prefill_tokens=120).admit(waiting, measured)
    assert names(admission.group) == ["a", "b"]  # with c: 3 rows x 50 > 120
    assert admission.failed == []


def test_the_first_sequence_always_fits_and_is_chunked_later() -> None:
    admission = scheduler(prefill_tokens=16).admit([Waiting("long", 500)], measured)
    assert names(admission.group) == ["long"]


def test_sequences_are_measured_in_order_and_not_past_the_first_that_does_not_fit() -> None:
    seen: list[str] = []

    def measure(sequence: Waiting) -> int | None:
        seen.append(sequence.name)
        return sequence.new_tokens

    waiting = [Waiting("a", 100), Waiting("b", 100), Waiting("c", 1)]
    assert names(scheduler(prefill_tokens=150).admit(waiting, measure).group) == ["a"]
    assert seen == ["a", "b"]


def test_sequences_that_cannot_run_are_reported_and_skipped() -> None:
    waiting = [Waiting("a"), Waiting("broken", None), Waiting("c")]
    admission = scheduler().admit(waiting, measured)
    assert (names(admission.group), names(admission.failed)) == (["a", "c"], ["broken"])


@pytest.mark.parametrize(
    ("rows", "done", "width", "end"),
    [
        (1, 0, 100, 32),  # one prompt: budget-wide chunks
        (1, 96, 100, 100),  # the last chunk is what is left
        (4, 0, 100, 8),  # four rows share the budget
        (64, 0, 100, 1),  # at least one column per pass
        (2, 10, 20, 20),
    ],
)
def test_a_prefill_runs_in_chunks_of_the_budget_shared_by_its_rows(
    rows: int, done: int, width: int, end: int
) -> None:
    assert scheduler(prefill_tokens=32).prefill_end(rows=rows, done=done, width=width) == end


@pytest.mark.parametrize(
    ("ready", "decoding", "waiting", "first"),
    [
        (2, 0, 3, True),  # a burst: the next group is prefilled before the first decoding step
        (2, 1, 3, False),  # rows are decoding: they never wait for two prefill passes
        (2, 0, 0, False),  # nothing else waits
        (8, 0, 3, False),  # no slot free for the next group
    ],
)
def test_the_next_group_goes_first_only_in_a_burst_with_slots_free(
    ready: int, decoding: int, waiting: int, first: bool
) -> None:
    policy = scheduler(slots=8)
    assert policy.next_group_first(ready=ready, decoding=decoding, waiting=waiting) is first


def test_sequences_whose_consumer_left_leave() -> None:
    rows = [Waiting("a"), Waiting("b", cancelled=True), Waiting("c"), Waiting("d", cancelled=True)]
    assert Scheduler.partition(rows) == ([0, 2], [1, 3])
