"""Continuous batching of one model's streams: :class:`BatchedEngine`.

Laid out as vLLM's: ``engine`` (the worker loop that glues the parts), ``scheduler`` (pure
policy), ``kv`` (the KV-cache layout), ``runner`` (forward passes), ``sampler`` (pure
sampling functions), ``sequence`` (one request's state) and ``prefix_cache``.
"""

from .engine import BatchedEngine

__all__ = ["BatchedEngine"]
