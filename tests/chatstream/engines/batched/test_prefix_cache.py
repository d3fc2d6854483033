from __future__ import annotations

import pytest
import torch

from chatstream.engines.batched.prefix_cache import MIN_TOKENS, KeysAndValues, PrefixCache

HEADS, DIM, LAYERS = 2, 4, 3
BYTES_PER_TOKEN = LAYERS * 2 * HEADS * DIM * 4  # float32 keys and values


def kv(ids: list[int]) -> KeysAndValues:
    """Keys and values that encode each token's id, to tell which were returned."""
    column = torch.tensor(ids, dtype=torch.float32)[None, :, None].expand(HEADS, -1, DIM)
    return [(column + layer, -column - layer) for layer in range(LAYERS)]


def ids_of(layers: KeysAndValues) -> list[int]:
    return [int(x) for x in layers[0][0][0, :, 0]]


def cache_for(tokens: int) -> PrefixCache:
    return PrefixCache(tokens * BYTES_PER_TOKEN)


SYSTEM = list(range(100, 120))


def test_a_prompt_gets_the_longest_stored_start_and_leaves_its_last_token() -> None:
    cache = cache_for(1000)
    cache.store([*SYSTEM, 1, 2, 3], kv([*SYSTEM, 1, 2, 3]))
    cache.store([*SYSTEM, 7, 8], kv([*SYSTEM, 7, 8]))
    match = cache.match([*SYSTEM, 1, 2, 9, 9])
    assert match is not None
    assert match.tokens == len(SYSTEM) + 2
    assert ids_of(match.layers) == [*SYSTEM, 1, 2]
    assert [k.shape for k, _ in match.layers] == [(HEADS, len(SYSTEM) + 2, DIM)] * LAYERS
    assert match.layers[1][1][0, 0, 0] == -SYSTEM[0] - 1
    # The same prompt again: all but its last token.
    again = cache.match([*SYSTEM, 1, 2, 3])
    assert again is not None and again.tokens == len(SYSTEM) + 2


def test_short_or_missing_starts_are_no_match() -> None:
    cache = cache_for(1000)
    assert cache.match(SYSTEM) is None  # empty cache
    cache.store(SYSTEM, kv(SYSTEM))
    assert cache.match(SYSTEM[: MIN_TOKENS - 1] + [0] * 20) is None
    assert cache.match([0] * 30) is None
    assert cache.match(SYSTEM[:MIN_TOKENS]) is None  # too short to leave a token to run
    match = cache.match([*SYSTEM[:MIN_TOKENS], 0])
    assert match is not None and match.tokens == MIN_TOKENS


def test_a_sequence_that_goes_on_from_a_stored_one_replaces_it() -> None:
    cache = cache_for(1000)
    turn = [*SYSTEM, 1, 2]
    cache.store(turn, kv(turn))
    cache.store([*turn, 3, 4], kv([*turn, 3, 4]))  # the same conversation, one turn later
    assert (len(cache), cache.nbytes) == (1, (len(turn) + 2) * BYTES_PER_TOKEN)
    cache.store(turn, kv(turn))  # a start of what is stored: nothing new
    assert (len(cache), cache.nbytes) == (1, (len(turn) + 2) * BYTES_PER_TOKEN)


def test_the_least_recently_used_go_when_over_budget() -> None:
    cache = cache_for(3 * 20)
    a, b, c, d = ([n] * 20 for n in range(1, 5))
    for ids in (a, b, c):
        cache.store(ids, kv(ids))
    assert cache.match([*a, 0]) is not None  # a is used: b is now the oldest
    cache.store(d, kv(d))
    assert cache.nbytes == 3 * 20 * BYTES_PER_TOKEN == cache.capacity_bytes
    assert cache.match([*b, 0]) is None
    assert all(cache.match([*ids, 0]) is not None for ids in (a, c, d))


def test_what_does_not_fit_is_cut_off_at_the_end() -> None:
    cache = cache_for(15)
    long = list(range(40))
    cache.store(long, kv(long))
    assert cache.nbytes == 15 * BYTES_PER_TOKEN
    match = cache.match(long)
    assert match is not None and ids_of(match.layers) == long[:15]


def test_a_zero_budget_keeps_nothing() -> None:
    cache = PrefixCache(0)
    cache.store(SYSTEM, kv(SYSTEM))
    assert (len(cache), cache.nbytes, cache.match([*SYSTEM, 1])) == (0, 0, None)
    with pytest.raises(ValueError, match="capacity_bytes"):
        PrefixCache(-1)


def test_clear_empties_it() -> None:
    cache = cache_for(100)
    cache.store(SYSTEM, kv(SYSTEM))
    cache.clear()
    assert (len(cache), cache.nbytes, cache.match([*SYSTEM, 1])) == (0, 0, None)
