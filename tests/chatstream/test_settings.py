from __future__ import annotations

import pytest

from chatstream.settings import ConfigError, Settings


def test_defaults_match_the_design() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.redis_url is None
    assert settings.cookie_name == "chatstream_session"
    assert settings.model is None
    assert settings.mock_token_delay == 0.02
    assert settings.max_concurrent is None
    assert (settings.max_queue, settings.queue_timeout, settings.lease_ttl) == (64, 60.0, 15.0)
    assert settings.max_new_tokens == 256
    assert (settings.prefill_tokens, settings.prefix_cache_mb) == (256, 256)


def test_environment_values_are_parsed() -> None:
    settings = Settings.from_env(
        {
            "PORT": "9000",
            "CHATSTREAM_MODEL": "mock",
            "CHATSTREAM_SECRET_KEY": "new, old ,",
            "CHATSTREAM_QUEUE_TIMEOUT": "2.5",
            "CHATSTREAM_MAX_CONCURRENT": "3",
            "CHATSTREAM_PREFILL_TOKENS": "64",
            "CHATSTREAM_PREFIX_CACHE_MB": "0.5",
        }
    )
    assert (settings.prefill_tokens, settings.prefix_cache_mb) == (64, 0.5)
    assert settings.port == 9000
    assert settings.model == "mock"
    assert settings.secret_keys == ["new", "old"]
    assert settings.queue_timeout == 2.5
    assert settings.max_concurrent == 3


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("CHATSTREAM_MAX_QUEUE", "-1"),
        ("CHATSTREAM_PREFILL_TOKENS", "0"),
        ("CHATSTREAM_PREFIX_CACHE_MB", "-1"),
    ],
)
def test_bad_values_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})
