"""Where a remote engine's upstream is, and the remote engine's defaults.

Importable without httpx or transformers, so that the server's settings can check a model URL
and show the defaults before anything heavy loads. A model URL names an OpenAI-compatible
server and the model to ask it for: ``openai+http://host:port/v1#model-name`` (or
``openai+https://``). The part after ``#`` is the upstream's name of the model (for vLLM its
``--served-model-name``, for ``transformers serve`` the model's path or id, for Ollama its
tag); the rest, without ``openai+``, is the base URL that ``/chat/completions`` and
``/models`` hang off.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

DEFAULT_SLOTS = 8
"""Generations one chatstream instance streams from the upstream at once."""

DEFAULT_TIMEOUT = 60.0
"""Seconds the upstream may take to send its next bytes (its first token included)."""

_PREFIX = "openai+"
_SCHEMES = ("http", "https")


def is_model_url(name: str | None) -> bool:
    """Whether ``name`` names a remote model (an ``openai+http(s)://`` URL)."""
    return name is not None and name.startswith(tuple(f"{_PREFIX}{s}://" for s in _SCHEMES))


def parse_model_url(url: str) -> tuple[str, str]:
    """``(base_url, model)`` of a model URL; ``ValueError`` says what is wrong with it."""
    if not is_model_url(url):
        raise ValueError(f"{url!r} is not an openai+http:// or openai+https:// URL")
    parts = urlsplit(url.removeprefix(_PREFIX))
    if not parts.hostname:
        raise ValueError(f"{url!r} names no host: openai+http://host:port/v1#model-name")
    if not parts.fragment:
        raise ValueError(
            f"{url!r} names no model: add the upstream's model name after '#' "
            "(openai+http://host:port/v1#model-name)"
        )
    base_url = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), parts.query, ""))
    return base_url, parts.fragment
