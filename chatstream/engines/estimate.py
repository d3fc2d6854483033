"""Token counts for a model whose tokenizer is not at hand: a conservative estimate.

A remote engine without a local tokenizer still has to fit conversations into the model's
context and to count the tokens of a reply the upstream did not count. The estimate errs high
(for English and code), so that a fitted prompt is not refused for being too long:

- a text costs its UTF-8 bytes divided by :data:`BYTES_PER_TOKEN` (3), rounded up. English
  takes about 4.5 bytes a token and code 3.5 on SmolLM2's tokenizer (more on the larger
  vocabularies of bigger models), so this counts them high. Other scripts can take fewer bytes
  a token: on SmolLM2, German, French and Spanish 2.8, Russian 2.4, Chinese 2.0, emoji 1.3, so
  there the estimate counts low. Give the engine the model's tokenizer for exact counts.
- each message adds :data:`MESSAGE_OVERHEAD` (8) tokens for what the chat template writes
  around it (ChatML's ``<|im_start|>role\\n ... <|im_end|>\\n`` is 5 tokens, Llama 3's header
  and ``<|eot_id|>`` 5, Gemma's 5 to 6);
- the prompt adds :data:`PROMPT_OVERHEAD` (32) for the reply's header and what templates write
  on their own: SmolLM2's default system prompt (22 tokens when a conversation has none),
  Llama 3.1's knowledge-cutoff and date lines (about 25).
"""

from __future__ import annotations

from collections.abc import Sequence

from .rendering import PlainRenderer

BYTES_PER_TOKEN = 3
MESSAGE_OVERHEAD = 8
PROMPT_OVERHEAD = 32


class EstimatingRenderer(PlainRenderer):
    """Counts tokens by the estimate above; renders ``role: content`` lines for display (the
    upstream renders the real prompt with its own chat template). No stop strings: the
    upstream ends each reply at its model's end of turn."""

    def count_tokens(self, text: str) -> int:
        return -(-len(text.encode()) // BYTES_PER_TOKEN)

    def count_prompt_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        contents = sum(self.count_tokens(message["content"]) for message in messages)
        return contents + MESSAGE_OVERHEAD * len(messages) + PROMPT_OVERHEAD
