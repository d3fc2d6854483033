"""Likes, dislikes and free-form feedback on the replies of a session."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sessions import SerializationError, dumps, loads

from ..errors import InputTooLong
from ..validation import validate_object

MAX_FORM_DATA_BYTES = 4096

FeedbackHook = Callable[[Any, dict[str, Any]], Awaitable[object] | object]
"""``on_feedback(request, feedback)``: a plain or coroutine function, called once stored."""


class FeedbackBody(BaseModel):
    """``{"message_id": str, "is_like": bool, "form_data": {...}}``."""

    model_config = ConfigDict(strict=True, extra="ignore")

    message_id: str = Field(min_length=1, max_length=128)
    is_like: bool
    conversation_id: str | None = Field(None, min_length=1, max_length=64)
    form_data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("form_data")
    @classmethod
    def _storable(cls, form_data: dict[str, Any]) -> dict[str, Any]:
        """It is stored in the session as sent, so it must read back as the same plain JSON: a
        dict with exactly the keys ``__type__`` and ``data`` is the serializer's (it would read
        back as a registered type, or not at all and break the session's later requests)."""
        try:
            stored = loads(dumps(form_data))
        except SerializationError:
            stored = None
        if stored != form_data:
            raise ValueError('a dict with exactly the keys "__type__" and "data" is reserved')
        return form_data


def validate_feedback(data: object) -> FeedbackBody:
    """The feedback in ``data`` (422 if malformed, 413 when its ``form_data`` is over
    :data:`MAX_FORM_DATA_BYTES` as JSON)."""
    feedback = validate_object(FeedbackBody, data)
    if len(dumps(feedback.form_data).encode()) > MAX_FORM_DATA_BYTES:
        raise InputTooLong(f"form_data is over {MAX_FORM_DATA_BYTES} bytes as JSON")
    return feedback
