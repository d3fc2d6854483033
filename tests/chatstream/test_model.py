from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from chatstream.app import build_chat_stream
from chatstream.engines.base import GenerationParams, GenerationRequest
from chatstream.engines.batched import BatchedEngine
from chatstream.engines.hf import TransformersEngine
from chatstream.model import (
    BUNDLED_MODEL_NAME,
    CHATML_TEMPLATE,
    ModelAndTokenizer,
    ModelNotFoundError,
    bundled_gguf_path,
    default_cache_dir,
    load_model,
    plain_copy,
    resolve_device,
    resolve_dtype,
    write_model_cache,
)
from chatstream.settings import Settings
from sessions.embedded import embedded_redis

from .engines.streams import collect
from .tiny_model import tiny_llama, tiny_tokenizer


def quantized_looking_model() -> LlamaForCausalLM:
    """A tiny model whose config carries a GGUF quantization config, like one read from a GGUF."""
    model = tiny_llama()
    model.config.quantization_config = {"quant_method": "gguf", "gguf_file": "x.gguf"}
    return model


def assert_same_weights(loaded: torch.nn.Module, original: torch.nn.Module) -> None:
    expected = original.state_dict()
    actual = loaded.state_dict()
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[name], expected[name]) for name in expected)


def test_the_cache_round_trips_the_model_and_tokenizer(tmp_path: Path) -> None:
    original = quantized_looking_model()
    cache = tmp_path / "models" / "tiny"
    write_model_cache(plain_copy(original), tiny_tokenizer(), cache)

    config = json.loads((cache / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert [p.name for p in cache.parent.iterdir()] == ["tiny"]
    model, tokenizer = load_model(cache_dir=cache)
    assert_same_weights(model, original)
    assert model.dtype == torch.float32
    assert model.name_or_path == BUNDLED_MODEL_NAME
    assert tokenizer.chat_template == CHATML_TEMPLATE
    assert tokenizer.encode("é<|im_end|>", add_special_tokens=False) == [195, 169, 257]


def test_a_failed_write_leaves_no_cache_and_no_debris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenizer = tiny_tokenizer()
    cache = tmp_path / "tiny"

    def crash(directory: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(tokenizer, "save_pretrained", crash)
    with pytest.raises(OSError, match="disk full"):
        write_model_cache(plain_copy(tiny_llama()), tokenizer, cache)
    assert list(tmp_path.iterdir()) == []


def test_a_cache_written_first_by_another_process_is_kept(tmp_path: Path) -> None:
    cache = tmp_path / "tiny"
    write_model_cache(tiny_llama(seed=1), tiny_tokenizer(), cache)
    first = (cache / "model.safetensors").read_bytes()
    write_model_cache(tiny_llama(seed=2), tiny_tokenizer(), cache)
    assert (cache / "model.safetensors").read_bytes() == first
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]


def test_a_local_directory_loads(tmp_path: Path) -> None:
    original = tiny_llama()
    original.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    model, tokenizer = load_model(str(tmp_path))
    assert_same_weights(model, original)
    assert tokenizer.eos_token == "<|im_end|>"


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [("auto", torch.float32), ("float32", torch.float32), ("bfloat16", torch.bfloat16)],
)
def test_a_model_loads_as_the_dtype_asked_for_on_the_cpu(
    tmp_path: Path, dtype: str, expected: torch.dtype
) -> None:
    original = tiny_llama()
    original.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    model, _ = load_model(str(tmp_path), dtype=dtype, device="cpu")
    assert (model.dtype, model.device) == (expected, torch.device("cpu"))
    bundled, _ = load_model(cache_dir=tmp_path, dtype=dtype, device="cpu")
    assert bundled.dtype == expected


def test_auto_is_float32_on_a_cpu_and_a_half_precision_on_a_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What docs/engine-performance.md measured; a GPU without bfloat16 gets float16."""
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("float16", torch.device("cpu")) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_dtype("auto", torch.device("cuda:1")) == torch.float16
    assert resolve_dtype("auto", torch.device("mps")) == torch.float16


def test_no_device_is_the_gpu_when_there_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None) == torch.device("cuda")


def test_a_model_not_on_this_machine_is_a_clear_error() -> None:
    with pytest.raises(ModelNotFoundError, match="hf download nobody/no-such-model"):
        load_model("nobody/no-such-model")


def test_the_served_cache_dir_dtype_and_device_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert default_cache_dir() == Path.home() / ".cache/chatstream/models/smollm2-135m-instruct"
    asked: list[tuple[Path | None, str, str | None]] = []

    def load(
        name_or_path: str | None, *, cache_dir: Path | None, dtype: str, device: str | None
    ) -> ModelAndTokenizer:
        asked.append((cache_dir, dtype, device))
        raise ModelNotFoundError("recorded")

    monkeypatch.setattr("chatstream.model.load_model", load)
    settings = Settings.from_env(
        {
            "CHATSTREAM_CACHE_DIR": "~/models/smollm2",
            "CHATSTREAM_DTYPE": "bfloat16",
            "CHATSTREAM_DEVICE": "cpu",
        }
    )
    with pytest.raises(ModelNotFoundError, match="recorded"):
        build_chat_stream(settings, embedded_redis())
    assert asked == [(Path.home() / "models/smollm2", "bfloat16", "cpu")]


def test_the_bundled_gguf_is_installed() -> None:
    assert bundled_gguf_path().stat().st_size > 50_000_000


@pytest.mark.model
async def test_the_bundled_model_knows_the_capital_of_france() -> None:
    model, tokenizer = load_model()  # builds the cache on the first run (~20 s)
    engine = TransformersEngine(model, tokenizer)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = engine.renderer.render(messages, add_generation_prompt=True)
    params = GenerationParams(max_new_tokens=32, temperature=0)
    try:
        deltas, done = await collect(engine.generate(GenerationRequest(prompt, params, messages)))
    finally:
        await engine.aclose()
    assert "Paris" in "".join(deltas)
    assert done.finish_reason == "stop"
    assert engine.model_name == BUNDLED_MODEL_NAME


@pytest.mark.model
async def test_the_prefix_cache_leaves_the_bundled_models_replies_unchanged() -> None:
    """A conversation's second turn reuses the first's keys and values, with the same greedy
    replies as when every prompt is prefilled whole."""
    model, tokenizer = load_model()
    params = GenerationParams(max_new_tokens=24, temperature=0)
    transcripts = []
    for prefix_cache_mb in (256, 0):
        engine = BatchedEngine(model, tokenizer, prefix_cache_mb=prefix_cache_mb)
        messages: list[dict[str, str]] = []
        replies, cached = [], []
        try:
            for question in ("What is the capital of France?", "And what river flows there?"):
                messages.append({"role": "user", "content": question})
                prompt = engine.renderer.render(messages, add_generation_prompt=True)
                request = GenerationRequest(prompt, params, list(messages))
                deltas, done = await collect(engine.generate(request))
                messages.append({"role": "assistant", "content": "".join(deltas)})
                replies.append("".join(deltas))
                cached.append(done.cached_tokens)
        finally:
            await engine.aclose()
        transcripts.append((replies, cached))
    (with_cache, cached), (without_cache, none) = transcripts
    assert with_cache == without_cache
    assert "Paris" in with_cache[0]
    assert none == [0, 0]
    assert cached[1] > 30  # the system prompt, the first question and most of its answer
