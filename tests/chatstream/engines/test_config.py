from __future__ import annotations

import subprocess
import sys

import pytest

from chatstream.engines.config import DTYPES, BatchingConfig, ModelPlacement, is_device


def test_the_batching_defaults_are_class_attributes() -> None:
    """16 slots: chosen from measurement (docs/engine-performance.md)."""
    assert (BatchingConfig.slots, BatchingConfig.prefill_tokens) == (16, 256)
    assert BatchingConfig.prefix_cache_mb == 256
    assert BatchingConfig() == BatchingConfig(16, 256, 256)


def test_a_model_is_placed_on_the_fastest_dtype_of_its_device_by_default() -> None:
    assert ModelPlacement() == ModelPlacement("auto", None)
    assert DTYPES == ("auto", "float32", "bfloat16", "float16")


@pytest.mark.parametrize("name", ["cpu", "cuda", "cuda:1", "mps", "xpu:0"])
def test_devices_are_torch_device_names(name: str) -> None:
    assert is_device(name)
    assert ModelPlacement(device=name).device == name


@pytest.mark.parametrize("name", ["gpu", "cuda:", "CUDA", "cuda:x", "cpu cuda", ""])
def test_other_device_names_are_refused(name: str) -> None:
    assert not is_device(name)
    with pytest.raises(ValueError, match="not a device"):
        ModelPlacement(device=name)


@pytest.mark.parametrize("dtype", ["fp32", "float64", "int8", "bf16", "Float32"])
def test_unsupported_dtypes_are_refused(dtype: str) -> None:
    with pytest.raises(ValueError, match="not supported"):
        ModelPlacement(dtype=dtype)


def test_settings_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="slots"):
        BatchingConfig(slots=0)
    with pytest.raises(ValueError, match="prefill_tokens"):
        BatchingConfig(prefill_tokens=0)
    with pytest.raises(ValueError, match="prefix_cache_mb"):
        BatchingConfig(prefix_cache_mb=-1)


def test_the_contract_and_the_defaults_import_without_torch() -> None:
    """The chat layer (settings, the CLI) reads them without loading a model's libraries."""
    code = (
        "import sys, chatstream.engines.base, chatstream.engines.config; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
