from __future__ import annotations

import subprocess
import sys

import pytest

import chatstream


def test_the_public_surface_is_exactly_this() -> None:
    assert chatstream.__all__ == [
        "Admission",
        "AdmissionConfig",
        "BatchedEngine",
        "ChatPrompt",
        "ChatStream",
        "ChatStreamError",
        "ChatTemplateRenderer",
        "CompletionCallback",
        "ConfigError",
        "Engine",
        "FinishReason",
        "GenerationDone",
        "GenerationEvent",
        "GenerationFailed",
        "GenerationParams",
        "GenerationRequest",
        "GenerationSettings",
        "InputTooLong",
        "InvalidJSON",
        "InvalidRequest",
        "Load",
        "Message",
        "MissingChatTemplateError",
        "MockEngine",
        "ModelNotFoundError",
        "NotFound",
        "NothingToRegenerate",
        "OpenAICompatibleEngine",
        "Outcome",
        "Permit",
        "PlainRenderer",
        "PromptRenderer",
        "QueueFull",
        "QueueTimeout",
        "RedisSemaphore",
        "RequestLimits",
        "ServiceUnavailable",
        "SessionBusy",
        "Settings",
        "TextDelta",
        "TransformersEngine",
        "Unauthorized",
        "UpstreamUnavailable",
        "load_model",
    ]


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert chatstream.__all__ == sorted(chatstream.__all__)
    for name in chatstream.__all__:
        assert getattr(chatstream, name) is not None
    assert set(chatstream.__all__) <= set(dir(chatstream))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        chatstream.no_such_thing  # noqa: B018


def test_the_configuration_mistakes_are_value_errors_outside_the_http_tree() -> None:
    for error in (chatstream.ConfigError, chatstream.ModelNotFoundError):
        assert issubclass(error, ValueError)
        assert not issubclass(error, chatstream.ChatStreamError)
    assert issubclass(chatstream.MissingChatTemplateError, ValueError)


def test_importing_chatstream_and_serving_a_chat_needs_no_torch() -> None:
    """``import chatstream`` (and the ChatStream class) stays free of torch and transformers:
    they load with an engine or a model."""
    code = (
        "import sys, chatstream; chatstream.ChatStream; chatstream.ChatPrompt; "
        "chatstream.Outcome; chatstream.RedisSemaphore; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
