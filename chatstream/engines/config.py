"""The batched engine's settings and their defaults, importable without torch.

The class attributes are the defaults (``BatchingConfig.prefill_tokens``): ``BatchedEngine``,
``ChatStream`` and the server's settings all read them here, so each default has one home.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchingConfig:
    """How :class:`~chatstream.engines.batched.BatchedEngine` batches its streams.

    ``slots`` is the largest batch: requests beyond it wait for a row to free up.
    ``prefill_tokens`` bounds one prefill pass (rows times their padded new prompt tokens):
    smaller passes give the first tokens of a burst of requests sooner, and keep a long prompt
    from stalling the running rows for its whole prefill. ``prefix_cache_mb`` is the memory, in
    MiB, for the keys and values of recent prompts and replies, so that a prompt starting like
    one of them is prefilled only from where it differs (0 turns this off).
    """

    slots: int = 8
    prefill_tokens: int = 256
    prefix_cache_mb: float = 256

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError("slots must be >= 1")
        if self.prefill_tokens < 1:
            raise ValueError("prefill_tokens must be >= 1")
        if self.prefix_cache_mb < 0:
            raise ValueError("prefix_cache_mb must be >= 0")
