"""Settings of the served app, read from the environment; the CLI has a flag for each.

Each field names its environment variable and its help text; its default comes from the class
that owns it (:mod:`chatstream.config`, ``GenerationParams``, the batching defaults), so a
default is written once.

Why one module: every setting of the served app is one field here, with its variable and its
help, so that one place lists them all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .config import AccessConfig, AdmissionConfig, ReplyConfig, RequestLimits, ServerLimits
from .engines.base import GenerationParams
from .engines.config import DTYPES, BatchingConfig, ModelPlacement, is_device
from .engines.remote_config import DEFAULT_SLOTS, is_model_url, parse_model_url

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the server does not start."""


def setting(default: Any, env: str, help: str) -> Any:
    """A :class:`Settings` field read from ``env``."""
    return field(default=default, metadata={"env": env, "help": help})


@dataclass(frozen=True, slots=True)
class Settings:
    """Every field has an environment variable (``env`` in its metadata) and a CLI flag."""

    host: str = setting("127.0.0.1", "HOST", "interface to listen on")
    port: int = setting(8000, "PORT", "port to listen on")
    redis_url: str | None = setting(
        None,
        "REDIS_URL",
        "shared Redis: redis://host:port/db, redis+cluster://host:port,host:port or "
        "redis+sentinel://host:port,host:port/name; unset = embedded store, one process",
    )
    secret_key: str | None = setting(
        None,
        "CHATSTREAM_SECRET_KEY",
        "cookie signing key(s), comma-separated, newest first; required with Redis",
    )
    cookie_name: str = setting(
        "chatstream_session", "CHATSTREAM_COOKIE_NAME", "name of the session cookie"
    )
    model: str | None = setting(
        None,
        "CHATSTREAM_MODEL",
        "Hugging Face id or local path (no downloads); 'mock' = the mock engine; "
        "openai+http://host:port/v1#model-name = that model of an OpenAI-compatible server "
        "(openai+https:// too); unset = the bundled SmolLM2-135M-Instruct",
    )
    upstream_api_key: str | None = setting(
        None, "CHATSTREAM_UPSTREAM_API_KEY", "Bearer token for an openai+http(s):// model's server"
    )
    upstream_slots: int = setting(
        DEFAULT_SLOTS, "CHATSTREAM_UPSTREAM_SLOTS", "replies streamed at once from that server"
    )
    context_len: int | None = setting(
        None,
        "CHATSTREAM_CONTEXT_LEN",
        "the model's context window in tokens (prompt and reply), that conversations are fitted "
        "to; unset = a local model's own, none for a remote model (sent whole)",
    )
    tokenizer: str | None = setting(
        None,
        "CHATSTREAM_TOKENIZER",
        "the tokenizer of an openai+http(s):// model (local path or Hugging Face id on this "
        "disk), to count its tokens exactly; unset = a conservative estimate",
    )
    cache_dir: str | None = setting(
        None,
        "CHATSTREAM_CACHE_DIR",
        "the bundled model's safetensors cache directory; "
        "unset = ~/.cache/chatstream/models/smollm2-135m-instruct",
    )
    mock_token_delay: float = setting(
        0.02, "CHATSTREAM_MOCK_TOKEN_DELAY", "seconds per token of the mock engine"
    )
    max_concurrent: int | None = setting(
        AdmissionConfig.max_concurrent,
        "CHATSTREAM_MAX_CONCURRENT",
        "cluster-wide concurrent generations (unset: the engine's slots)",
    )
    max_queue: int = setting(
        AdmissionConfig.max_queue,
        "CHATSTREAM_MAX_QUEUE",
        "cluster-wide waiting requests before 429 queue_full",
    )
    queue_timeout: float = setting(
        AdmissionConfig.queue_timeout,
        "CHATSTREAM_QUEUE_TIMEOUT",
        "seconds a request may wait before 503 queue_timeout",
    )
    lease_ttl: float = setting(
        AdmissionConfig.lease_ttl,
        "CHATSTREAM_LEASE_TTL",
        "seconds a crashed instance keeps its permits and session leases",
    )
    max_per_client: int = setting(
        AdmissionConfig.max_per_client,
        "CHATSTREAM_MAX_PER_CLIENT",
        "requests one client may have queued or running cluster-wide before 429; 0 = no cap",
    )
    rate_limit: int = setting(
        AdmissionConfig.rate_limit,
        "CHATSTREAM_RATE_LIMIT",
        "turns one client may start per minute before 429; 0 = off",
    )
    detach_grace: float = setting(
        ReplyConfig.detach_grace,
        "CHATSTREAM_DETACH_GRACE",
        "seconds a reply goes on generating after its last client left; 0 = stop at once",
    )
    reply_ttl: float = setting(
        ReplyConfig.reply_ttl,
        "CHATSTREAM_REPLY_TTL",
        "seconds a reply's events stay in Redis after it ends, for clients that attach late",
    )
    record_replies: bool = setting(
        ReplyConfig.record,
        "CHATSTREAM_RECORD_REPLIES",
        "record replies' events in Redis so any instance can serve them; 0 = only locally",
    )
    max_new_tokens: int = setting(
        GenerationParams.max_new_tokens,
        "CHATSTREAM_MAX_NEW_TOKENS",
        "default reply length cap, in tokens",
    )
    api_keys: str | None = setting(
        None,
        "CHATSTREAM_API_KEYS",
        "Bearer tokens (32+ characters each) the routes require, comma-separated; unset = open",
    )
    api_keys_scope: str = setting(
        AccessConfig.api_keys_scope,
        "CHATSTREAM_API_KEYS_SCOPE",
        "what the API keys protect: v1 = the OpenAI-compatible routes, all = every route but "
        "/healthz and /readyz",
    )
    allowed_origins: str | None = setting(
        None,
        "CHATSTREAM_ALLOWED_ORIGINS",
        "other sites allowed to send state-changing requests (https://app.example.com), "
        "comma-separated; unset = none",
    )
    allowed_hosts: str | None = setting(
        None,
        "CHATSTREAM_ALLOWED_HOSTS",
        "Host names the server answers to, comma-separated ('*' = any); unset = the loopback "
        "names when bound to loopback, else any (with a warning)",
    )
    trusted_user_header: str | None = setting(
        None,
        "CHATSTREAM_TRUSTED_USER_HEADER",
        "a header naming the signed-in user (X-Forwarded-User), set by an authenticating proxy; "
        "honoured only from FORWARDED_ALLOW_IPS; unset = none",
    )
    forwarded_allow_ips: str = setting(
        "127.0.0.1,::1",
        "FORWARDED_ALLOW_IPS",
        "proxy addresses (or networks) whose X-Forwarded-For/-Proto and trusted user header "
        "count, comma-separated; * = any (uvicorn's own variable)",
    )
    max_new_tokens_limit: int = setting(
        RequestLimits.max_new_tokens_limit,
        "CHATSTREAM_MAX_NEW_TOKENS_LIMIT",
        "the most tokens a client may ask a reply to have",
    )
    max_connections: int = setting(
        ServerLimits.max_connections,
        "CHATSTREAM_MAX_CONNECTIONS",
        "open connections at once; more are answered 503 (uvicorn's limit_concurrency)",
    )
    header_timeout: float = setting(
        ServerLimits.header_timeout,
        "CHATSTREAM_HEADER_TIMEOUT",
        "seconds a client may take to send a request's headers before it is disconnected",
    )
    docs: bool = setting(
        False,
        "CHATSTREAM_DOCS",
        "serve /docs, /redoc and /openapi.json (they load scripts from a CDN)",
    )
    slots: int = setting(
        BatchingConfig.slots,
        "CHATSTREAM_SLOTS",
        "rows the local model's batched engine decodes at once; more requests wait for a row",
    )
    dtype: str = setting(
        ModelPlacement.dtype,
        "CHATSTREAM_DTYPE",
        "the local model's weights: auto, float32, bfloat16 or float16; auto = the fastest "
        "measured for the device (float32 on a CPU, bfloat16 on a GPU that has it, else float16)",
    )
    device: str | None = setting(
        ModelPlacement.device,
        "CHATSTREAM_DEVICE",
        "where the local model runs: cpu, cuda, cuda:1, mps...; unset = the first GPU if "
        "there is one, else cpu",
    )
    prefill_tokens: int = setting(
        BatchingConfig.prefill_tokens,
        "CHATSTREAM_PREFILL_TOKENS",
        "new prompt tokens per prefill pass of the batched engine: smaller gives a burst of "
        "requests their first tokens sooner, larger prefills more at once",
    )
    prefix_cache_mb: float = setting(
        BatchingConfig.prefix_cache_mb,
        "CHATSTREAM_PREFIX_CACHE_MB",
        "MiB kept of recent prompts' and replies' KV cache, so a prompt that starts like one of "
        "them (system prompt, a conversation's earlier turns) skips that part; 0 = off",
    )

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ConfigError(f"{env_name('slots')}={self.slots} must be >= 1")
        if self.dtype not in DTYPES:
            raise ConfigError(
                f"{env_name('dtype')}={self.dtype!r} is not supported: use one of "
                f"{', '.join(DTYPES)}"
            )
        if self.device is not None and not is_device(self.device):
            raise ConfigError(
                f"{env_name('device')}={self.device!r} is not a device: use cpu, cuda, "
                "cuda:N, mps or another torch device type"
            )
        if self.prefill_tokens < 1:
            raise ConfigError(f"{env_name('prefill_tokens')}={self.prefill_tokens} must be >= 1")
        if self.api_keys_scope not in ("v1", "all"):
            raise ConfigError(f"{env_name('api_keys_scope')} must be v1 or all")
        if self.upstream_slots < 1:
            raise ConfigError(f"{env_name('upstream_slots')} must be >= 1")
        if is_model_url(self.model):
            try:
                parse_model_url(str(self.model))
            except ValueError as exc:
                raise ConfigError(f"{env_name('model')}: {exc}") from None
        elif self.upstream_api_key or self.tokenizer:
            raise ConfigError(
                f"{env_name('upstream_api_key')} and {env_name('tokenizer')} are for a remote "
                f"model ({env_name('model')}=openai+http://host:port/v1#model-name)"
            )

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
    def access(self) -> AccessConfig:
        try:
            return AccessConfig(
                api_keys=tuple(self.api_key_list),
                api_keys_scope="all" if self.api_keys_scope == "all" else "v1",
                allowed_origins=tuple(_comma_list(self.allowed_origins)),
            )
        except ValueError as exc:
            raise ConfigError(f"{env_name('api_keys')}: {exc}") from None

    @property
    def trusted_proxies(self) -> list[str]:
        return _comma_list(self.forwarded_allow_ips)

    @property
    def server_limits(self) -> ServerLimits:
        return ServerLimits(
            max_connections=self.max_connections, header_timeout=self.header_timeout
        )

    @property
    def host_names(self) -> list[str]:
        """The ``Host`` names to answer to: the configured ones, else the loopback names when
        bound to loopback, else any (``["*"]``)."""
        configured = _comma_list(self.allowed_hosts)
        if configured:
            return configured
        return list(LOOPBACK_HOSTS) if self.host in LOOPBACK_HOSTS else ["*"]

    @property
    def admission(self) -> AdmissionConfig:
        return AdmissionConfig(
            max_concurrent=self.max_concurrent,
            max_queue=self.max_queue,
            queue_timeout=self.queue_timeout,
            lease_ttl=self.lease_ttl,
            max_per_client=self.max_per_client,
            rate_limit=self.rate_limit,
        )


_BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _comma_list(value: str | None) -> list[str]:
    """The non-empty items of a comma-separated setting, stripped."""
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def env_name(name: str) -> str:
    """The environment variable of a ``Settings`` field."""
    return str(Settings.__dataclass_fields__[name].metadata["env"])


def _parse(variable: str, raw: str, annotation: object) -> object:
    kind = str(annotation)
    if kind == "bool":
        if raw.lower() not in _BOOLEANS:
            raise ConfigError(f"{variable}={raw!r} is not one of {', '.join(_BOOLEANS)}")
        return _BOOLEANS[raw.lower()]
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
