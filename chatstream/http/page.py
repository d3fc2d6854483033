"""The web chat page: ``GET /`` and its two assets, read from the package's ``static/`` data.

The page is static (no build step, nothing fetched from elsewhere) and talks to the JSON/SSE
routes with relative URLs, so it also works when the router is mounted under a prefix.
"""

from __future__ import annotations

import functools
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response

# The page runs only its own script and style; model output can never become markup, and
# this policy is a second wall should that ever break.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@functools.cache
def _read(name: str) -> bytes:
    return (files("chatstream.http") / "static" / name).read_bytes()


def _asset(name: str, media_type: str) -> Response:
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if media_type.startswith("text/html"):
        headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return Response(_read(name), media_type=media_type, headers=headers)


async def index(request: Request) -> Response:
    """The chat page."""
    return _asset("index.html", "text/html; charset=utf-8")


async def script(request: Request) -> Response:
    """The chat page's script (``/static/app.js``)."""
    return _asset("app.js", "text/javascript; charset=utf-8")


async def stylesheet(request: Request) -> Response:
    """The chat page's style sheet (``/static/style.css``)."""
    return _asset("style.css", "text/css; charset=utf-8")
