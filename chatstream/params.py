"""Sampling parameters a session may set for its next turns, with their valid ranges."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .body import validate_object
from .engines.base import GenerationParams

SESSION_PARAMS_KEY = "generation_params"

# The valid ranges, shared with the OpenAI-compatible API's request body.
Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
TopP = Annotated[float, Field(gt=0.0, le=1.0)]
MaxNewTokens = Annotated[int, Field(ge=1, le=8192)]


class GenerationSettings(BaseModel):
    """``temperature`` 0 means greedy decoding; ``top_k`` 0 turns top-k filtering off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: Temperature = 0.7
    top_p: TopP = 0.9
    top_k: int = Field(50, ge=0, le=1000)
    max_new_tokens: MaxNewTokens = 256
    repetition_penalty: float = Field(1.0, ge=1.0, le=2.0)

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
