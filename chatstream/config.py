"""Settings of the served app, read from the environment (the CLI has a flag for each)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from .engines.config import BatchingConfig
from .errors import ChatStreamError


class ConfigError(ChatStreamError):
    """A setting has a value that cannot be used; the server does not start."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Every field has an environment variable (``ENV`` in its metadata) and a CLI flag."""

    host: str = field(default="127.0.0.1", metadata={"env": "HOST"})
    port: int = field(default=8000, metadata={"env": "PORT"})
    redis_url: str | None = field(default=None, metadata={"env": "REDIS_URL"})
    secret_key: str | None = field(default=None, metadata={"env": "CHATSTREAM_SECRET_KEY"})
    cookie_name: str = field(
        default="chatstream_session", metadata={"env": "CHATSTREAM_COOKIE_NAME"}
    )
    model: str | None = field(default=None, metadata={"env": "CHATSTREAM_MODEL"})
    mock_token_delay: float = field(default=0.02, metadata={"env": "CHATSTREAM_MOCK_TOKEN_DELAY"})
    max_concurrent: int | None = field(default=None, metadata={"env": "CHATSTREAM_MAX_CONCURRENT"})
    max_queue: int = field(default=64, metadata={"env": "CHATSTREAM_MAX_QUEUE"})
    queue_timeout: float = field(default=60.0, metadata={"env": "CHATSTREAM_QUEUE_TIMEOUT"})
    lease_ttl: float = field(default=15.0, metadata={"env": "CHATSTREAM_LEASE_TTL"})
    max_new_tokens: int = field(default=256, metadata={"env": "CHATSTREAM_MAX_NEW_TOKENS"})
    api_keys: str | None = field(default=None, metadata={"env": "CHATSTREAM_API_KEYS"})
    prefill_tokens: int = field(
        default=BatchingConfig.prefill_tokens, metadata={"env": "CHATSTREAM_PREFILL_TOKENS"}
    )
    prefix_cache_mb: float = field(
        default=BatchingConfig.prefix_cache_mb, metadata={"env": "CHATSTREAM_PREFIX_CACHE_MB"}
    )

    def __post_init__(self) -> None:
        if self.prefill_tokens < 1:
            raise ConfigError(f"CHATSTREAM_PREFILL_TOKENS={self.prefill_tokens} must be >= 1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for spec in fields(cls):
            raw = environ.get(spec.metadata["env"], "").strip()
            if raw:
                values[spec.name] = _parse(spec.metadata["env"], raw, spec.type)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def secret_keys(self) -> list[str]:
        """Cookie signing keys, newest first."""
        return _comma_list(self.secret_key)

    @property
    def api_key_list(self) -> list[str]:
        """Bearer tokens the ``/v1`` routes accept; none = the routes are open."""
        return _comma_list(self.api_keys)

    @property
    def is_mock(self) -> bool:
        return self.model == "mock"


def _comma_list(value: str | None) -> list[str]:
    """The non-empty items of a comma-separated setting, stripped."""
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def env_name(name: str) -> str:
    """The environment variable of a ``Settings`` field."""
    return str(Settings.__dataclass_fields__[name].metadata["env"])


def _parse(variable: str, raw: str, annotation: object) -> object:
    kind = str(annotation)
    try:
        if kind.startswith("int"):
            value: object = int(raw)
        elif kind.startswith("float"):
            value = float(raw)
        else:
            return raw
    except ValueError:
        raise ConfigError(f"{variable}={raw!r} is not a number") from None
    if isinstance(value, int | float) and value < 0:
        raise ConfigError(f"{variable}={raw!r} must not be negative")
    return value
