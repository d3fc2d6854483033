"""Sampling parameters a session may set for its next turns, with their valid ranges."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..engines.base import GenerationParams
from ..errors import InvalidRequest
from ..validation import validate_object

# The valid ranges, shared with the OpenAI-compatible API's request body.
Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
TopP = Annotated[float, Field(gt=0.0, le=1.0)]
MaxNewTokens = Annotated[int, Field(ge=1)]
"""Its ceiling is the server's (``max_new_tokens_limit``), checked by :meth:`check_limit`."""


class GenerationSettings(BaseModel):
    """``temperature`` 0 means greedy decoding; ``top_k`` 0 turns top-k filtering off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: Temperature = GenerationParams.temperature
    top_p: TopP = GenerationParams.top_p
    top_k: int = Field(GenerationParams.top_k, ge=0, le=1000)
    max_new_tokens: MaxNewTokens = GenerationParams.max_new_tokens
    repetition_penalty: float = Field(GenerationParams.repetition_penalty, ge=1.0, le=2.0)

    @classmethod
    def validate_changes(cls, data: object, *, max_new_tokens_limit: int) -> dict[str, Any]:
        """The fields a client asked to change, checked against their ranges (422 if not)."""
        changes = validate_object(_StrictSettings, data).model_dump(exclude_unset=True)
        check_limit(changes.get("max_new_tokens"), max_new_tokens_limit)
        return changes

    def merged(
        self, changes: Mapping[str, Any], *, max_new_tokens_limit: int
    ) -> GenerationSettings:
        """These settings with ``changes`` applied; stored changes that are invalid (or over
        today's ``max_new_tokens_limit``) are ignored."""
        try:
            merged = self.model_validate({**self.model_dump(), **changes})
        except ValidationError:
            return self
        return self if merged.max_new_tokens > max_new_tokens_limit else merged

    def to_params(self) -> GenerationParams:
        return GenerationParams(**self.model_dump())


class _StrictSettings(GenerationSettings):
    """What a client may send: JSON numbers only (no strings, no booleans), known fields only."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def check_limit(max_new_tokens: int | None, limit: int, name: str = "max_new_tokens") -> None:
    """Refuse (422) a reply length over the server's ceiling; ``name`` is the field as the
    client called it."""
    if max_new_tokens is not None and max_new_tokens > limit:
        raise InvalidRequest(f"{name} must be at most {limit} on this server")
