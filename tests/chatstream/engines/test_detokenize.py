from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from chatstream.engines.detokenize import IncrementalDetokenizer

from ..tiny_model import EOS_ID, IM_START_ID, text_ids, tiny_tokenizer


def push_one_by_one(detokenizer: IncrementalDetokenizer, ids: list[int]) -> list[str]:
    return [detokenizer.push([token_id]) for token_id in ids]


def test_multibyte_characters_come_out_whole_once_complete() -> None:
    detokenizer = IncrementalDetokenizer(tiny_tokenizer())
    # 你 and 好 are three bytes each, 😀 four: one token per byte.
    deltas = push_one_by_one(detokenizer, text_ids("你好😀"))
    assert deltas == ["", "", "你", "", "", "好", "", "", "", "😀"]


def test_deltas_join_into_the_decoded_text() -> None:
    text = "Grüße, 世界! 👋🏽 ok"
    detokenizer = IncrementalDetokenizer(tiny_tokenizer())
    assert "".join(push_one_by_one(detokenizer, text_ids(text))) == text


def test_special_tokens_decode_to_nothing() -> None:
    detokenizer = IncrementalDetokenizer(tiny_tokenizer())
    ids = [*text_ids("a"), IM_START_ID, *text_ids("é"), EOS_ID]
    assert push_one_by_one(detokenizer, ids) == ["a", "", "", "é", ""]


def test_a_leading_space_is_kept_after_the_first_token() -> None:
    # SentencePiece-style tokenizers drop the space of a sequence's first "▁word" only.
    vocab = {"[UNK]": 0, "▁Hello": 1, "▁world": 2}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)  # type: ignore[no-untyped-call]
    detokenizer = IncrementalDetokenizer(tokenizer)
    assert push_one_by_one(detokenizer, [1, 2, 2]) == ["Hello", " world", " world"]
