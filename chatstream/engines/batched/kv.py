"""The KV-cache layout of the batched engine: rows that join, leave and grow.

Every row of a batch shares one ``DynamicCache`` as wide as its longest row, so rows are
padded on the left and a mask (``valid``) hides the padding. The operations here keep the
cache, the mask and each row's next position consistent as rows are selected away, appended
(re-padding the narrower cache), and as a prefill lays out prompts whose start came from the
prefix cache. Only full-attention caches can be re-padded this way (:func:`can_batch`).
"""

from __future__ import annotations

from typing import Protocol, cast

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import DynamicCache, DynamicLayer

from .prefix_cache import KeysAndValues
from .sequence import SequenceState


def can_batch(model: PreTrainedModel) -> bool:
    """Whether every layer of ``model`` uses full attention (no sliding window), so that its
    KV cache can be re-padded as rows join."""
    layers = DynamicCache(config=model.config).layers
    return all(type(layer) is DynamicLayer for layer in layers)


class Batch:
    """Sequences decoded together: one row each in a KV cache as wide as ``valid``.

    ``valid[i, c]`` says whether cache column ``c`` of row ``i`` holds one of its tokens; the
    others are padding. ``positions[i]`` is the position of row ``i``'s next token (how many
    tokens it has in the cache).
    """

    def __init__(
        self,
        rows: list[SequenceState],
        cache: DynamicCache,
        valid: torch.Tensor,
        positions: list[int],
    ) -> None:
        self.rows = rows
        self.cache = cache
        self.valid = valid
        self.positions = positions

    @property
    def width(self) -> int:
        return int(self.valid.shape[1])

    def add_column(self) -> list[int]:
        """Make room for one more token per row; return the positions of those tokens."""
        positions = self.positions
        self.positions = [p + 1 for p in positions]
        self.valid = torch.cat([self.valid, self.valid.new_ones(len(self.rows), 1)], dim=1)
        return positions

    def select(self, indices: list[int]) -> Batch | None:
        """The batch with only these rows (``None`` if none), trimmed of the padding columns on
        the left that no row needs."""
        if len(indices) == len(self.rows):
            return self
        if not indices:
            return None
        used = self.valid[torch.tensor(indices, device=self.valid.device)].any(dim=0)
        return self.take(indices, trim=int(used.int().argmax()))  # the first column in use

    def take(self, indices: list[int], trim: int = 0) -> Batch:
        """These rows, in this order, without the first ``trim`` cache columns."""
        index = torch.tensor(indices, device=self.valid.device)
        for layer in _layers(self.cache):
            layer.keys = layer.keys[index, :, trim:]
            layer.values = layer.values[index, :, trim:]
        rows = [self.rows[i] for i in indices]
        positions = [self.positions[i] for i in indices]
        return Batch(rows, self.cache, self.valid[index, trim:], positions)

    def extend(self, other: Batch) -> None:
        """Append ``other``'s rows, padding the narrower of the two caches on the left."""
        width = max(self.width, other.width)
        for mine, theirs in zip(_layers(self.cache), _layers(other.cache), strict=True):
            mine.keys = _stack(mine.keys, theirs.keys, width)
            mine.values = _stack(mine.values, theirs.values, width)
        self.valid = torch.cat([_pad_columns(self.valid, width), _pad_columns(other.valid, width)])
        self.rows = self.rows + other.rows
        self.positions = self.positions + other.positions

    def row_cache(self, i: int) -> tuple[list[int], KeysAndValues]:
        """Row ``i``'s token ids in the cache, and copies of their keys and values."""
        columns = self.valid[i]
        kv = [
            (layer.keys[i][:, columns], layer.values[i][:, columns])
            for layer in _layers(self.cache)
        ]
        return self.rows[i].token_ids[: self.positions[i]], kv


def merge(batch: Batch | None, newcomers: Batch | None) -> Batch | None:
    """The running batch with the ``newcomers`` appended (either may be ``None``)."""
    if batch is None:
        return newcomers
    if newcomers is not None:
        batch.extend(newcomers)
    return batch


class PrefillLayout:
    """Newcomers whose prompts go into a fresh KV cache, some columns per pass; once all are
    in, :attr:`batch` is ready to decode.

    Row ``i`` holds the start of its prompt found in the prefix cache (``r`` tokens,
    right-aligned in the first ``R`` columns, ``R`` the longest such start), then the rest of
    its prompt (``s`` tokens, right-aligned in the last ``S`` columns): its columns are ``R - r``
    padding, ``r`` cached, ``S - s`` padding, ``s`` new.
    """

    def __init__(self, model: PreTrainedModel, rows: list[SequenceState]) -> None:
        cached = [row.cached_tokens for row in rows]
        new = [len(row.token_ids) - r for row, r in zip(rows, cached, strict=True)]
        self.cached, self.new = max(cached), max(new)
        cache = DynamicCache(config=model.config)
        if self.cached:
            self._load_prefixes(cache, rows)
        valid = torch.tensor(
            [
                [False] * (self.cached - r) + [True] * r + [False] * (self.new - s) + [True] * s
                for r, s in zip(cached, new, strict=True)
            ],
            device=model.device,
        )
        self.batch = Batch(rows, cache, valid, [len(row.token_ids) for row in rows])
        self.starts = [self.batch.width - s for s in new]  # each row's first new column
        self.done = self.cached  # the columns already in the cache

    def _load_prefixes(self, cache: DynamicCache, rows: list[SequenceState]) -> None:
        """Put each row's cached start in the first columns, padded on the left."""
        template = next(row.prefix for row in rows if row.prefix is not None).layers
        for index, (k0, v0) in enumerate(template):
            heads, _, dim = k0.shape
            keys, values = [], []
            for row in rows:
                if row.prefix is None:
                    keys.append(k0.new_zeros(heads, self.cached, dim))
                    values.append(v0.new_zeros(heads, self.cached, dim))
                else:
                    k, v = row.prefix.layers[index]
                    keys.append(_pad_left(k, self.cached))
                    values.append(_pad_left(v, self.cached))
            cache.update(torch.stack(keys), torch.stack(values), index)
        for row in rows:
            row.prefix = None  # the cache holds its own copy now

    def columns(self, end: int) -> tuple[list[list[int]], list[list[int]]]:
        """The token ids and positions of each row's columns from :attr:`done` to ``end``
        (padding columns get id and position 0)."""
        batch = self.batch
        ids, positions = [], []
        for row, total, first in zip(batch.rows, batch.positions, self.starts, strict=True):
            # From its first new column on, column c holds the row's token c - offset.
            offset = batch.width - total
            columns = range(self.done, end)
            ids.append([row.token_ids[c - offset] if c >= first else 0 for c in columns])
            positions.append([c - offset if c >= first else 0 for c in columns])
        return ids, positions

    def keep(self, indices: list[int]) -> None:
        """Only these rows go on prefilling."""
        if len(indices) < len(self.batch.rows):
            self.batch = self.batch.take(indices)  # no trim: the columns not run are not cached
            self.starts = [self.starts[i] for i in indices]


class _KeysAndValues(Protocol):
    keys: torch.Tensor
    values: torch.Tensor


def _layers(cache: DynamicCache) -> list[_KeysAndValues]:
    """The cache's layers that hold keys and values (``DynamicLayer``: see :func:`can_batch`)."""
    # An unused layer has no keys (transformers 4.56 has no ``is_initialized``).
    all_layers = cast(list[_KeysAndValues], cache.layers)
    return [layer for layer in all_layers if getattr(layer, "keys", None) is not None]


def _stack(mine: torch.Tensor, theirs: torch.Tensor, width: int) -> torch.Tensor:
    """Two ``(batch, heads, tokens, dim)`` cache tensors as one, left-padded to ``width``."""
    return torch.cat([_pad_left(mine, width), _pad_left(theirs, width)])


def _pad_columns(valid: torch.Tensor, width: int) -> torch.Tensor:
    """A ``(rows, columns)`` mask padded on the left with ``False`` to ``width`` columns."""
    padding = width - valid.shape[1]
    return torch.nn.functional.pad(valid, (padding, 0), value=False) if padding else valid


def _pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    padding = width - tensor.shape[-2]
    return torch.nn.functional.pad(tensor, (0, 0, padding, 0)) if padding else tensor
