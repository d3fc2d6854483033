"""Incremental detokenization: token ids in, whole characters out."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from transformers import PreTrainedTokenizerBase

_INCOMPLETE = "\ufffd"


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas that never split a character.

    Only a short window is decoded each time: the ids since the last emitted text, plus the
    ids of the delta before it as context (SentencePiece tokenizers decode a leading space
    differently at the start of a sequence). Text that ends in U+FFFD is an incomplete UTF-8
    sequence and is held back until the next token completes it; an incomplete character at
    the very end of a generation is dropped. Special tokens decode to nothing.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, token_ids: Iterable[int]) -> str:
        """Add generated ids; return the text they complete (possibly empty)."""
        self._ids.extend(token_ids)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        text = self._decode(self._ids[self._prefix_offset :])
        if len(text) <= len(prefix) or text.endswith(_INCOMPLETE):
            return ""
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return text[len(prefix) :]

    def _decode(self, ids: list[int]) -> str:
        text = self._tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        return cast(str, text)
