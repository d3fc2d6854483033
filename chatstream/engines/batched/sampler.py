"""Sampling for the batched engine: pure functions from logits to each row's next token.

Every row samples with its own parameters (greedy, temperature, top-k, top-p, repetition
penalty), as ``generate`` would for it alone, so that batching never changes a reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch

from ..base import GenerationParams
from .sequence import SequenceState


def next_tokens(logits: torch.Tensor, rows: Sequence[SequenceState]) -> list[int]:
    """Each row's next token: its repetition penalty, then greedy or sampled per its params."""
    for i, row in enumerate(rows):
        penalty = row.params.repetition_penalty
        if penalty != 1.0:
            seen = torch.tensor(row.token_ids, device=logits.device)
            scores = logits[i, seen]
            logits[i, seen] = torch.where(scores < 0, scores * penalty, scores / penalty)
    tokens = logits.argmax(dim=-1)
    sampled = [i for i, row in enumerate(rows) if row.params.temperature > 0]
    if sampled:
        index = torch.tensor(sampled, device=logits.device)
        tokens[index] = sample(logits[index], [rows[i].params for i in sampled])
    return cast(list[int], tokens.tolist())


def sample(logits: torch.Tensor, params: Sequence[GenerationParams]) -> torch.Tensor:
    """Sample one token per row with its temperature, then top-k, then top-p filtering.

    ``top_k`` 0 and ``top_p`` 1 turn their filter off, as in ``generate``; the most likely
    token always stays a candidate.
    """
    device = logits.device
    temperature = torch.tensor([p.temperature for p in params], device=device)
    top_k = torch.tensor([p.top_k or logits.shape[-1] for p in params], device=device)
    top_p = torch.tensor([p.top_p if p.top_p < 1 else 2.0 for p in params], device=device)
    scores, order = torch.sort(logits / temperature[:, None], dim=-1, descending=True)
    rank = torch.arange(scores.shape[-1], device=device)
    scores = scores.masked_fill(rank >= top_k[:, None], float("-inf"))
    probs = scores.softmax(dim=-1)
    more_likely = probs.cumsum(dim=-1) - probs
    probs = probs.masked_fill(more_likely >= top_p[:, None], 0.0)
    return order.gather(-1, torch.multinomial(probs, 1)).squeeze(-1)
