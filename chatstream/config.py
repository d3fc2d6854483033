"""The defaults of chatstream's settings, each written once.

Small frozen classes, one per concern. ``ChatStream(...)``, the environment reader
(:class:`~chatstream.settings.Settings`) and the CLI all take their defaults from here (the
sampling defaults live on :class:`~chatstream.engines.base.GenerationParams`, the batching ones
on :class:`~chatstream.engines.config.BatchingConfig`). The classes are plain dataclasses, not
slotted, so ``AdmissionConfig.max_queue`` reads a default without an instance. Nothing here
imports torch or a web framework.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

MIN_API_KEY_LENGTH = 32


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
    max_per_client: int = 4
    """Requests one client may have queued or running cluster-wide before
    ``429 too_many_requests``; ``0``: no cap (behind a proxy that is not trusted, every user
    would look like one client)."""
    rate_limit: int = 30
    """Turns one client may start per minute before ``429 too_many_requests``; ``0``: off."""

    def __post_init__(self) -> None:
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        if self.max_per_client < 0 or self.rate_limit < 0:
            raise ValueError("max_per_client and rate_limit must not be negative")
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
    body_timeout: float = 30.0
    """Seconds a client may take to send a request body (408 beyond)."""
    max_new_tokens_limit: int = 2048
    """The most tokens a reply may be asked for (``max_new_tokens``, OpenAI's ``max_tokens``)."""

    def __post_init__(self) -> None:
        if min(self.max_input_chars, self.max_body_bytes, self.max_json_bytes) < 1:
            raise ValueError("request limits must be positive")
        if self.body_timeout <= 0 or self.max_new_tokens_limit < 1:
            raise ValueError("body_timeout and max_new_tokens_limit must be positive")


@dataclass(frozen=True)
class AccessConfig:
    """Who may use the routes.

    ``api_keys`` are Bearer tokens (at least 32 characters each); with none, every route is
    open. ``api_keys_scope`` says what they protect: ``"v1"`` the OpenAI-compatible routes,
    ``"all"`` every route but the probes (``/healthz``, ``/readyz``). ``allowed_origins`` are
    other sites' origins (``https://app.example.com``) allowed to send state-changing requests.
    """

    api_keys: tuple[str, ...] = ()
    api_keys_scope: Literal["v1", "all"] = "v1"
    allowed_origins: tuple[str, ...] = ()
    key_digests: tuple[bytes, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if any(len(key) < MIN_API_KEY_LENGTH for key in self.api_keys):
            raise ValueError(f"an API key must be at least {MIN_API_KEY_LENGTH} characters")
        if self.api_keys_scope not in ("v1", "all"):
            raise ValueError(f"api_keys_scope must be 'v1' or 'all', not {self.api_keys_scope!r}")
        digests = tuple(key_digest(key) for key in self.api_keys)
        object.__setattr__(self, "key_digests", digests)
        origins = tuple(origin.rstrip("/") for origin in self.allowed_origins)
        object.__setattr__(self, "allowed_origins", origins)


def key_digest(key: str) -> bytes:
    """What API keys are compared as: equal-length digests, so a comparison's time tells
    nothing about a key's length or content."""
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class ServerLimits:
    """What ``chatstream serve`` bounds per connection (see the README on running behind a
    proxy, which should bound them too)."""

    max_connections: int = 1000
    """Connections open at once; beyond, uvicorn answers 503."""
    header_timeout: float = 10.0
    """Seconds to send a request's headers before the connection is closed (slow clients)."""
    max_header_bytes: int = 16 * 1024
    """Bytes of a request line and headers (a larger request is refused with 400)."""
    keep_alive_timeout: float = 5.0
    """Seconds an idle keep-alive connection stays open."""


@dataclass(frozen=True)
class ConversationLimits:
    """How much one owner may keep: past a limit the request is refused (409), nothing is
    dropped silently."""

    max_messages: int = 1000
    """Messages in one conversation (user and assistant alike)."""
    max_conversation_bytes: int = 4 * 2**20
    """UTF-8 bytes of one conversation's messages."""
    max_conversations: int = 1000
    """Conversations of one owner."""

    def __post_init__(self) -> None:
        if min(self.max_messages, self.max_conversation_bytes, self.max_conversations) < 1:
            raise ValueError("conversation limits must be positive")


@dataclass(frozen=True)
class ReplyConfig:
    """How replies outlive the connection that asked for them."""

    detach_grace: float = 30.0
    """Seconds a reply goes on generating after its last client left (0: it stops at once)."""
    reply_ttl: float = 600.0
    """Seconds a reply's events stay in Redis after it ends, for clients that attach late."""
    record: bool = True
    """Record each reply's events in Redis, so that any instance can serve them (off: only the
    instance that generates a reply can attach to it)."""

    def __post_init__(self) -> None:
        if self.detach_grace < 0 or self.reply_ttl <= 0:
            raise ValueError("detach_grace must not be negative and reply_ttl must be positive")
