"""Sampling parameters a session may set for its next turns, with their valid ranges."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..engines.base import GenerationParams
from ..validation import validate_object

_DEFAULTS = GenerationParams()

# The valid ranges, shared with the OpenAI-compatible API's request body.
Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
TopP = Annotated[float, Field(gt=0.0, le=1.0)]
MaxNewTokens = Annotated[int, Field(ge=1, le=8192)]


class GenerationSettings(BaseModel):
    """``temperature`` 0 means greedy decoding; ``top_k`` 0 turns top-k filtering off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: Temperature = _DEFAULTS.temperature
    top_p: TopP = _DEFAULTS.top_p
    top_k: int = Field(_DEFAULTS.top_k, ge=0, le=1000)
    max_new_tokens: MaxNewTokens = _DEFAULTS.max_new_tokens
    repetition_penalty: float = Field(_DEFAULTS.repetition_penalty, ge=1.0, le=2.0)

    @classmethod
    def validate_changes(cls, data: object) -> dict[str, Any]:
        """The fields a client asked to change, checked against their ranges (422 if not)."""
        return validate_object(_StrictSettings, data).model_dump(exclude_unset=True)

    def merged(self, changes: Mapping[str, Any]) -> GenerationSettings:
        """These settings with ``changes`` applied; invalid stored changes are ignored."""
        try:
            return self.model_validate({**self.model_dump(), **changes})
        except ValidationError:
            return self

    def to_params(self) -> GenerationParams:
        return GenerationParams(**self.model_dump())


class _StrictSettings(GenerationSettings):
    """What a client may send: JSON numbers only (no strings, no booleans), known fields only."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
