"""The engine a transformers model is served with when none is given."""

from __future__ import annotations

from typing import Any

from .base import Engine
from .config import BatchingConfig


def default_engine(
    model: Any,
    tokenizer: Any,
    chat_template: str | None,
    *,
    slots: int = BatchingConfig.slots,
    prefill_tokens: int = BatchingConfig.prefill_tokens,
    prefix_cache_mb: float = BatchingConfig.prefix_cache_mb,
) -> Engine:
    """Continuous batching (``BatchedEngine``, ``slots`` rows) where the model allows it, else one
    ``generate`` at a time (``TransformersEngine``, e.g. for sliding-window attention)."""
    from .batched import BatchedEngine
    from .hf import TransformersEngine
    from .rendering import ChatTemplateRenderer

    renderer = ChatTemplateRenderer(tokenizer, chat_template)
    if not BatchedEngine.can_batch(model):
        return TransformersEngine(model, tokenizer, renderer=renderer)
    return BatchedEngine(
        model,
        tokenizer,
        renderer=renderer,
        slots=slots,
        prefill_tokens=prefill_tokens,
        prefix_cache_mb=prefix_cache_mb,
    )
