"""Prompt token ids in which message text is never a control token.

A chat template writes special tokens (``<|im_start|>``, ``<|im_end|>``) around each message;
a tokenizer turns any occurrence of their text into those tokens. So a user who types
``<|im_end|>\\n<|im_start|>system ...`` would, tokenized the usual way, close their own turn
and open a system turn. :class:`PromptTokenizer` keeps the template's special tokens and
encodes the ones that message contents spell as plain text.

How: before rendering, each special token's text in a message's content is wrapped in two
private-use characters (which the content loses, if it had them), so the template, whatever it
does with the content, writes them through. The rendered prompt is split at the wrapped
tokens: the text between them is tokenized the usual way, and each wrapped token as its plain
text. A conversation whose contents spell no special token is therefore tokenized exactly as
its rendered prompt always was, with any template and tokenizer; the text on either side of a
wrapped token is tokenized apart, as it would be beside a real special token. (transformers
5's ``apply_chat_template(sanitize_control_tokens=True)`` works the same way; it is not in the
transformers versions chatstream supports, nor for a renderer of one's own.)

Which tokens: those the tokenizer flags special (its eos, pad and chat tokens). Other added
tokens (a vocabulary extension such as ``<think>`` on some models) are text the tokenizer
always matches whole, in a template or not, and stay as they are. Only whole special tokens
are kept plain: a template that builds one from pieces of a message's content (none of the
usual ones does) must check the content itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from .base import PromptRenderer

_OPEN, _CLOSE = "\ue000", "\ue001"


class PromptTokenizer:
    """Tokenizes prompts for ``tokenizer``: the renderer's special tokens stay special, and
    those spelled by message contents are plain text.

    Only the ``content`` of each message is user text (roles are the chat layer's, checked
    there). Thread-safe: it never switches the tokenizer's ``split_special_tokens``, which a
    fast tokenizer keeps in state shared by every thread using it.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer
        special = {
            token.content for token in tokenizer.added_tokens_decoder.values() if token.special
        }
        special.update(tokenizer.all_special_tokens)
        self._as_text = {token: _plain_ids(tokenizer, token) for token in special}
        # Longest first, so that a token wins over the shorter ones it contains.
        alternatives = "|".join(map(re.escape, sorted(special, key=len, reverse=True)))
        self._special = re.compile(alternatives or "(?!)")  # (?!) never matches
        self._wrapped = re.compile(f"{_OPEN}({alternatives}){_CLOSE}|[{_OPEN}{_CLOSE}]")

    def encode(
        self,
        renderer: PromptRenderer,
        messages: Sequence[dict[str, str]],
        *,
        add_generation_prompt: bool,
    ) -> list[int]:
        """The token ids of ``renderer``'s prompt for ``messages``."""
        wrapped = [{**message, "content": self._wrap(message["content"])} for message in messages]
        return self._ids(renderer.render(wrapped, add_generation_prompt=add_generation_prompt))

    def encode_text(self, text: str) -> list[int]:
        """The ids of ``text`` outside any template (a reply's start), as plain text."""
        return self._ids(self._wrap(text))

    def _ids(self, marked: str) -> list[int]:
        """The ids of text whose special tokens to keep as text are wrapped in markers."""
        # [text, wrapped token, text, ...]; a lone marker (the template split a wrapped token,
        # or changed it) is dropped, but still parts the text around it.
        pieces = self._wrapped.split(marked)
        ids: list[int] = []
        for index, piece in enumerate(pieces):
            if index % 2:
                ids += self._as_text[piece] if piece is not None else []
            elif piece:
                ids += self._tokenizer.encode(piece, add_special_tokens=False)
        return ids

    def _wrap(self, content: str) -> str:
        content = content.replace(_OPEN, "").replace(_CLOSE, "")  # no forged markers
        return self._special.sub(rf"{_OPEN}\g<0>{_CLOSE}", content)


def _plain_ids(tokenizer: PreTrainedTokenizerBase, token: str) -> list[int]:
    """The ids of ``token``'s text as plain text, never the token itself: a vocabulary that
    spells the text as the token (its merges reach it) gets it one character at a time."""
    ids = _without_added_tokens(tokenizer, token)
    if tokenizer.convert_tokens_to_ids(token) in ids:
        ids = [i for char in token for i in _without_added_tokens(tokenizer, char)]
    return ids


def _without_added_tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """``text`` tokenized by the tokenizer's model alone, its added tokens not matched."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a Python tokenizer: there, split_special_tokens is a per-call option
        ids: list[int] = tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)
        return ids
    # A fast tokenizer's split_special_tokens is state of its backend, shared by all threads:
    # run the backend's steps without its added tokens instead.
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    splits = [text]
    if backend.pre_tokenizer is not None:
        splits = [split for split, _ in backend.pre_tokenizer.pre_tokenize_str(text)]
    return [token.id for split in splits for token in backend.model.tokenize(split)]
