"""The batched engine's forward passes: a decoding step of a batch, a chunk of a prefill.

The runner turns a layout (``kv``) into the model's inputs (ids, the attention mask, positions)
and returns the next-token logits; the cache is updated in place by the model. It never
decides what runs (the scheduler does) nor samples (the sampler does).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.generation.utils import ALL_CACHE_NAMES

from .kv import Batch, PrefillLayout

# The keyword under which this transformers' models take their KV cache ("cache" from 5.x on).
_CACHE_KEYWORD: str = ALL_CACHE_NAMES[0]


def decode(model: PreTrainedModel, batch: Batch) -> torch.Tensor:
    """Feed each row its last token; return the next-token logits."""
    positions = [[p] for p in batch.add_column()]
    ids = [[row.token_ids[-1]] for row in batch.rows]
    return _forward(model, batch.cache, ids, positions, batch.valid)


def prefill(model: PreTrainedModel, layout: PrefillLayout, end: int) -> torch.Tensor | None:
    """Run the layout's columns up to ``end``; the next-token logits once the prompts are all
    in, else ``None``."""
    ids, positions = layout.columns(end)
    batch = layout.batch
    logits = _forward(model, batch.cache, ids, positions, batch.valid[:, :end])
    layout.done = end
    return logits if end == batch.width else None


def _forward(
    model: PreTrainedModel,
    cache: DynamicCache,
    ids: list[list[int]],
    positions: list[list[int]],
    valid: torch.Tensor,
) -> torch.Tensor:
    """Run the model on ``ids`` (the cache's next columns; ``valid`` covers the cache up to
    and with them); return the next-token logits after their last column."""
    inputs: dict[str, Any] = {
        "input_ids": torch.tensor(ids, device=valid.device),
        "attention_mask": None if bool(valid.all()) else valid,
        "position_ids": torch.tensor(positions, device=valid.device),
        _CACHE_KEYWORD: cache,
        "use_cache": True,
        "logits_to_keep": 1,
    }
    logits = cast(torch.Tensor, model(**inputs).logits)
    return logits[:, -1].float()
