"""The defaults of chatstream's settings, each written once.

Small frozen classes, one per concern. ``ChatStream(...)``, the environment reader
(:class:`~chatstream.settings.Settings`) and the CLI all take their defaults from here (the
sampling defaults live on :class:`~chatstream.engines.base.GenerationParams`, the batching ones
on :class:`~chatstream.engines.config.BatchingConfig`). The classes are plain dataclasses, not
slotted, so ``AdmissionConfig.max_queue`` reads a default without an instance. Nothing here
imports torch or a web framework.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AdmissionConfig:
    """The cluster-wide limit on concurrent generations and its queue."""

    max_concurrent: int | None = None
    """Generations at once across every instance; ``None``: the engine's slots."""
    max_queue: int = 64
    """Requests waiting cluster-wide before ``429 queue_full``."""
    queue_timeout: float = 60.0
    """Seconds a request may wait before ``503 queue_timeout``."""
    lease_ttl: float = 15.0
    """Seconds a crashed instance keeps its permits and session leases."""
    max_per_client: int | None = 4
    """Requests one client may have queued or running cluster-wide before
    ``429 too_many_requests``; ``None``: no cap."""
    rate_limit: int = 30
    """Turns one client may start per minute before ``429 too_many_requests``; ``0``: off."""

    def __post_init__(self) -> None:
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        if self.max_per_client is not None and self.max_per_client < 1:
            raise ValueError("max_per_client must be >= 1")
        if self.rate_limit < 0:
            raise ValueError("rate_limit must not be negative")
        if self.max_queue < 0 or self.queue_timeout <= 0 or self.lease_ttl <= 0:
            raise ValueError("max_queue, queue_timeout and lease_ttl must be positive")


@dataclass(frozen=True)
class RequestLimits:
    """How much one request may send."""

    max_input_chars: int = 16_000
    """Characters of ``user_input`` (413 beyond)."""
    max_body_bytes: int = 256 * 1024
    """Bytes of a chat or completion request body (413 beyond)."""
    max_json_bytes: int = 64 * 1024
    """Bytes of the body of the other JSON routes (parameters, feedback)."""

    def __post_init__(self) -> None:
        if min(self.max_input_chars, self.max_body_bytes, self.max_json_bytes) < 1:
            raise ValueError("request limits must be positive")
