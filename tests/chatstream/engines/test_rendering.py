from __future__ import annotations

from collections.abc import Sequence

import pytest

from chatstream.engines.base import PromptRenderer
from chatstream.engines.rendering import (
    ChatTemplateRenderer,
    MissingChatTemplateError,
    PlainRenderer,
)
from chatstream.errors import ChatStreamError

from ..tiny_model import tiny_tokenizer

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
]


def test_the_tokenizers_chat_template_renders_the_prompt() -> None:
    renderer = ChatTemplateRenderer(tiny_tokenizer())
    assert isinstance(renderer, PromptRenderer)
    assert renderer.render(MESSAGES, add_generation_prompt=True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert renderer.render(MESSAGES[1:], add_generation_prompt=False) == (
        "<|im_start|>user\nHi<|im_end|>\n"
    )


def test_a_jinja_template_overrides_the_tokenizers() -> None:
    template = (
        "{% for m in messages %}[{{ m.role }}] {{ m.content }}</turn>\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    renderer = ChatTemplateRenderer(tiny_tokenizer(), template)
    assert renderer.render(MESSAGES[1:], add_generation_prompt=True) == (
        "[user] Hi</turn>\n[assistant] "
    )
    assert renderer.stop_strings == ("<|im_end|>", "</turn>")


def test_a_callable_template_is_called_with_the_messages() -> None:
    def template(messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> str:
        return "|".join(m["content"] for m in messages) + ("|>" if add_generation_prompt else "")

    renderer = ChatTemplateRenderer(tiny_tokenizer(chat_template=None), template)
    assert renderer.render(MESSAGES, add_generation_prompt=True) == "Be brief.|Hi|>"


def test_a_tokenizer_without_template_needs_one() -> None:
    """A configuration mistake, not an error of the chat layer's HTTP answers."""
    with pytest.raises(MissingChatTemplateError, match="chat_template="):
        ChatTemplateRenderer(tiny_tokenizer(chat_template=None))
    assert issubclass(MissingChatTemplateError, ValueError)
    assert not issubclass(MissingChatTemplateError, ChatStreamError)


def test_stop_strings_are_the_models_end_of_turn() -> None:
    assert ChatTemplateRenderer(tiny_tokenizer()).stop_strings == ("<|im_end|>",)


def test_tokens_are_counted_without_added_special_tokens() -> None:
    renderer = ChatTemplateRenderer(tiny_tokenizer())
    # One token per UTF-8 byte; a special token in the text is one token.
    assert renderer.count_tokens("héllo") == 6
    assert renderer.count_tokens("<|im_start|>user") == 5
    assert renderer.count_tokens("") == 0


def test_plain_renderer_writes_role_lines_and_counts_words() -> None:
    renderer = PlainRenderer()
    assert isinstance(renderer, PromptRenderer)
    assert renderer.render(MESSAGES, add_generation_prompt=True) == (
        "system: Be brief.\nuser: Hi\nassistant:"
    )
    assert renderer.render(MESSAGES, add_generation_prompt=False) == "system: Be brief.\nuser: Hi"
    assert renderer.count_tokens(" two  words\n") == 2
    assert renderer.count_prompt_tokens(MESSAGES) == len(
        ["system:", "Be", "brief.", "user:", "Hi", "assistant:"]
    )
    assert renderer.stop_strings == ()
