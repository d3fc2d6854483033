"""Prompt renderers: turn a conversation into the text a model is prompted with.

:class:`ChatTemplateRenderer` uses a Hugging Face tokenizer's chat template (or one given
explicitly); :class:`PlainRenderer` is for engines without a tokenizer, such as the mock engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeAlias

from transformers import PreTrainedTokenizerBase

from .prompt_tokens import PromptTokenizer

ChatTemplate: TypeAlias = str | Callable[[Sequence[dict[str, str]], bool], str]
"""A Jinja chat template, or a function ``(messages, add_generation_prompt) -> prompt``."""

_PROBE = "\x00chatstream-end-of-turn-probe\x00"


class MissingChatTemplateError(ValueError):
    """The tokenizer has no chat template and none was given: a configuration mistake, raised
    when the app starts, outside the chat layer's HTTP errors."""


class ChatTemplateRenderer:
    """Renders with a chat template and counts tokens with the model's tokenizer.

    ``chat_template`` overrides the tokenizer's own template: a Jinja string is rendered by the
    tokenizer, a callable is called as ``chat_template(messages, add_generation_prompt)``.
    ``stop_strings`` are the model's end-of-turn strings: the tokenizer's eos token and whatever
    the template writes right after an assistant message (``<|im_end|>`` for ChatML).
    :meth:`encode` gives the prompt's token ids as the transformers engines run them: the
    template's special tokens are special, those that message contents spell are plain text
    (see :mod:`chatstream.engines.prompt_tokens`).
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, chat_template: ChatTemplate | None = None
    ) -> None:
        if chat_template is None and not tokenizer.chat_template:
            raise MissingChatTemplateError(
                f"the tokenizer {tokenizer.name_or_path!r} has no chat template: "
                "pass chat_template= (a Jinja string or a function)"
            )
        self._tokenizer = tokenizer
        self._chat_template = chat_template
        self._prompt_tokenizer = PromptTokenizer(tokenizer)
        self.stop_strings: tuple[str, ...] = tuple(
            dict.fromkeys(s for s in (tokenizer.eos_token, self._end_of_turn()) if s)
        )

    def render(self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool) -> str:
        if callable(self._chat_template):
            return self._chat_template(messages, add_generation_prompt)
        prompt = self._tokenizer.apply_chat_template(
            list(messages),
            chat_template=self._chat_template,
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
        )
        if not isinstance(prompt, str):
            raise TypeError(f"the chat template rendered {type(prompt).__name__}, not text")
        return prompt

    def encode(
        self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool
    ) -> list[int]:
        """The token ids of the prompt for ``messages``, message contents as plain text."""
        return self._prompt_tokenizer.encode(
            self, messages, add_generation_prompt=add_generation_prompt
        )

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def count_prompt_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        """The tokens of the prompt for the next reply to ``messages``, as the engine runs it."""
        return len(self.encode(messages, add_generation_prompt=True))

    def _end_of_turn(self) -> str | None:
        """What the template writes after an assistant message, up to the first whitespace."""
        probe = [{"role": "user", "content": "?"}, {"role": "assistant", "content": _PROBE}]
        rendered = self.render(probe, add_generation_prompt=False)
        after = rendered.partition(_PROBE)[2].split()
        return after[0] if after else None


class PlainRenderer:
    """``role: content`` lines; tokens are whitespace-separated words."""

    stop_strings: tuple[str, ...] = ()

    def render(self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool) -> str:
        lines = [f"{message['role']}: {message['content']}" for message in messages]
        if add_generation_prompt:
            lines.append("assistant:")
        return "\n".join(lines)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def count_prompt_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        return self.count_tokens(self.render(messages, add_generation_prompt=True))
