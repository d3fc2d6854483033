"""The headers every answer of a chat route carries, and its JSON response.

Chat answers hold a user's conversation: ``Cache-Control: no-store`` keeps them out of shared
and browser caches, and ``X-Content-Type-Options: nosniff`` keeps a browser from reading a JSON
or text reply as anything else (HTML, a script).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

PRIVATE_HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
RAW_PRIVATE_HEADERS = [
    (name.lower().encode(), value.encode()) for name, value in PRIVATE_HEADERS.items()
]


def json_response(
    content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """A JSON answer with :data:`PRIVATE_HEADERS` (and ``headers``)."""
    return JSONResponse(content, status_code, headers={**PRIVATE_HEADERS, **(headers or {})})
