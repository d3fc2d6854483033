"""The local engines' settings and their defaults, importable without torch.

The class attributes are the defaults (``BatchingConfig.prefill_tokens``): ``BatchedEngine``,
``ChatStream``, :func:`~chatstream.model.load_model` and the server's settings all read them
here, so each default has one home.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DTYPES = ("auto", "float32", "bfloat16", "float16")
"""What a local model's weights may be loaded as; ``auto`` is the fastest measured for the
device (:func:`chatstream.model.resolve_dtype`)."""

DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")
"""The torch device types a local model may be placed on (``cuda:1``: with an index)."""


def is_device(name: str) -> bool:
    """Whether ``name`` is a device of one of :data:`DEVICE_TYPES` (``cpu``, ``cuda:1``)."""
    kinds = "|".join(DEVICE_TYPES)
    return re.fullmatch(rf"({kinds})(:\d+)?", name) is not None


@dataclass(frozen=True)
class ModelPlacement:
    """Where and how a local model's weights are loaded.

    ``dtype`` is one of :data:`DTYPES`. ``device`` is a torch device (``cpu``, ``cuda``,
    ``cuda:1``); ``None`` is the first GPU when there is one, else the CPU.
    """

    dtype: str = "auto"
    device: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not supported: use one of {DTYPES}")
        if self.device is not None and not is_device(self.device):
            raise ValueError(f"{self.device!r} is not a device of one of {DEVICE_TYPES}")


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

    slots: int = 16
    prefill_tokens: int = 256
    prefix_cache_mb: float = 256

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError("slots must be >= 1")
        if self.prefill_tokens < 1:
            raise ValueError("prefill_tokens must be >= 1")
        if self.prefix_cache_mb < 0:
            raise ValueError("prefix_cache_mb must be >= 0")
