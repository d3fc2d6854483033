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
    assert (settings.slots, settings.dtype, settings.device) == (16, "auto", None)


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
            "CHATSTREAM_SLOTS": "32",
            "CHATSTREAM_DTYPE": "bfloat16",
            "CHATSTREAM_DEVICE": "cuda:1",
        }
    )
    assert (settings.slots, settings.dtype, settings.device) == (32, "bfloat16", "cuda:1")
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
        ("CHATSTREAM_SLOTS", "0"),
        ("CHATSTREAM_SLOTS", "many"),
        ("CHATSTREAM_DTYPE", "fp16"),
        ("CHATSTREAM_DTYPE", "int8"),
        ("CHATSTREAM_DEVICE", "gpu"),
    ],
)
def test_bad_values_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_an_unsupported_dtype_is_refused_with_the_values_that_work() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"CHATSTREAM_DTYPE": "float64"})
    assert str(refused.value) == (
        "CHATSTREAM_DTYPE='float64' is not supported: use one of auto, float32, bfloat16, float16"
    )


def test_a_remote_model_is_served_by_the_remote_engine_with_its_settings() -> None:
    from chatstream.app import create_app
    from chatstream.engines.remote import OpenAICompatibleEngine

    settings = Settings.from_env(
        {
            "CHATSTREAM_MODEL": "openai+http://127.0.0.1:9/v1#org/model",
            "CHATSTREAM_UPSTREAM_API_KEY": "upstream-key",
            "CHATSTREAM_UPSTREAM_SLOTS": "3",
            "CHATSTREAM_CONTEXT_LEN": "4096",
        }
    )
    chat_stream = create_app(settings).state.chat_stream
    engine = chat_stream.engine
    assert isinstance(engine, OpenAICompatibleEngine)
    assert (engine.model_name, engine.slots, chat_stream.context_len) == ("org/model", 3, 4096)


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({"CHATSTREAM_MODEL": "openai+http://host:8000/v1"}, "names no model"),
        ({"CHATSTREAM_MODEL": "openai+http://h/v1#m", "CHATSTREAM_UPSTREAM_SLOTS": "0"}, ">= 1"),
        ({"CHATSTREAM_TOKENIZER": "HuggingFaceTB/SmolLM2-135M-Instruct"}, "for a remote model"),
        ({"CHATSTREAM_MODEL": "mock", "CHATSTREAM_UPSTREAM_API_KEY": "k"}, "for a remote model"),
    ],
)
def test_remote_model_settings_that_cannot_work_are_refused(
    environ: dict[str, str], says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        Settings.from_env(environ)


def test_a_remote_models_tokenizer_that_is_not_on_disk_is_a_config_error() -> None:
    from chatstream.app import create_app

    settings = Settings(model="openai+http://h/v1#m", tokenizer="/no/such/tokenizer")
    with pytest.raises(ConfigError, match="without downloading"):
        create_app(settings)
