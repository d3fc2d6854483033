from __future__ import annotations

import subprocess
import sys

import pytest

from chatstream.engines.config import BatchingConfig


def test_the_batching_defaults_are_class_attributes() -> None:
    assert (BatchingConfig.slots, BatchingConfig.prefill_tokens) == (8, 256)
    assert BatchingConfig.prefix_cache_mb == 256
    assert BatchingConfig() == BatchingConfig(8, 256, 256)


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
