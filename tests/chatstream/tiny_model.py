"""A tiny Llama and a byte-level tokenizer, built in-process (nothing downloads), for tests.

The tokenizer has one token per UTF-8 byte (id = byte value) plus ``<|im_start|>`` and
``<|im_end|>`` (the eos), and a ChatML chat template, so multi-byte characters always span
several tokens. :class:`TinyLlama` is a real (randomly initialised) Llama whose output can be
scripted, slowed down, or made to fail, and which counts its decoding steps.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.modeling_outputs import CausalLMOutputWithPast

from chatstream.model import CHATML_TEMPLATE

IM_START_ID = 256
EOS_ID = 257
PRINTABLE_IDS = range(ord(" "), ord("~") + 1)


def tiny_tokenizer(*, chat_template: str | None = CHATML_TEMPLATE) -> PreTrainedTokenizerFast:
    byte_symbols: dict[int, str] = bytes_to_unicode()  # type: ignore[no-untyped-call]
    vocab = {symbol: byte for byte, symbol in byte_symbols.items()}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        chat_template=chat_template,
    )


def tiny_config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=258,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=None,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
    )


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    """A plain random tiny Llama."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config())
    model.train(False)
    return model


def tiny_sliding_window_model() -> MistralForCausalLM:
    """A tiny Mistral whose attention has a sliding window (which BatchedEngine cannot batch)."""
    config = MistralConfig(
        vocab_size=258,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=16,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
    )
    model = MistralForCausalLM(config)
    model.train(False)
    return model


class TinyLlama(LlamaForCausalLM):  # type: ignore[no-untyped-call]
    """A random tiny Llama that only writes printable ASCII, or exactly ``script``.

    With ``script``, decoding step ``k`` of each generation yields ``script[k]`` and then the
    eos. ``step_delay`` sleeps in every forward pass (releasing the GIL like a real model);
    ``fail_at_step`` raises in that step. ``steps`` counts forward passes, ``max_in_flight``
    is the most that ever ran at once, and ``threads`` are the threads they ran in.
    ``prompts`` holds the input ids of each generation's first pass (each row's prompt, or its
    first chunk).
    """

    def __init__(
        self,
        script: Sequence[int] | None = None,
        *,
        step_delay: float = 0.0,
        fail_at_step: int | None = None,
        seed: int = 0,
    ) -> None:
        torch.manual_seed(seed)
        super().__init__(tiny_config())
        self.train(False)
        self.script = list(script) if script is not None else None
        self.step_delay = step_delay
        self.fail_at_step = fail_at_step
        self.steps = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.threads: set[int] = set()
        self.prompts: list[list[int]] = []
        self._lock = threading.Lock()
        self._steps_by_cache: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()

    def forward(self, *args: Any, **kwargs: Any) -> CausalLMOutputWithPast:
        cache = kwargs.get("cache", kwargs.get("past_key_values"))  # transformers 5 / 4
        with self._lock:
            step = self._steps_by_cache.get(cache, 0)
            self._steps_by_cache[cache] = step + 1
            self.steps += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.threads.add(threading.get_ident())
            if step == 0:
                self.prompts += kwargs["input_ids"].tolist()
        try:
            if step == self.fail_at_step:
                raise RuntimeError(f"scripted failure at step {step}")
            time.sleep(self.step_delay)
            output: CausalLMOutputWithPast = super().forward(*args, **kwargs)
        finally:
            with self._lock:
                self.in_flight -= 1
        assert output.logits is not None
        allowed = self._allowed_next(step)
        mask = torch.full_like(output.logits[:, -1], float("-inf"))
        mask[:, allowed] = 0.0
        output.logits[:, -1] += mask
        return output

    def _allowed_next(self, step: int) -> list[int]:
        if self.script is None:
            return list(PRINTABLE_IDS)
        return [self.script[step] if step < len(self.script) else EOS_ID]


def text_ids(text: str) -> list[int]:
    """The tiny tokenizer's ids of ``text``: its UTF-8 bytes."""
    return list(text.encode())
