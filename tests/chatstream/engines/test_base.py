from __future__ import annotations

from chatstream.engines.base import GenerationParams


def test_the_sampling_defaults_read_as_class_attributes() -> None:
    """Settings, the CLI and ChatStream can take their defaults from this one home."""
    assert (GenerationParams.max_new_tokens, GenerationParams.temperature) == (256, 0.7)
    assert (GenerationParams.top_p, GenerationParams.top_k) == (0.9, 50)
    assert GenerationParams.repetition_penalty == 1.0
    assert GenerationParams() == GenerationParams(256, 0.7, 0.9, 50, 1.0, ())
