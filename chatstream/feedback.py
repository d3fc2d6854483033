"""Likes, dislikes and free-form feedback on the replies of a session."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .body import describe_validation_error
from .errors import InvalidRequest

FEEDBACK_KEY = "feedback"

FeedbackHook = Callable[[Any, dict[str, Any]], Awaitable[object] | object]
"""``on_feedback(request, feedback)``: a plain or coroutine function, called once stored."""


class FeedbackBody(BaseModel):
    """``{"message_id": str, "is_like": bool, "form_data": {...}}``."""

    model_config = ConfigDict(strict=True, extra="ignore")

    message_id: str = Field(min_length=1, max_length=128)
    is_like: bool
    form_data: dict[str, Any] = Field(default_factory=dict)


def validate_feedback(data: object) -> FeedbackBody:
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        return FeedbackBody.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(describe_validation_error(exc)) from None
