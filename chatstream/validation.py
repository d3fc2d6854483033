"""Validating parsed JSON against pydantic models: anything invalid is ``422 invalid_request``
with a message naming the fields."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from .errors import InvalidRequest

Body = TypeVar("Body", bound=BaseModel)


def validate_object(model: type[Body], data: object) -> Body:
    """``data`` (parsed JSON) as ``model``; anything else is 422 ``invalid_request``."""
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors()
    )
