"""The web chat page: ``GET /`` and its assets, read from the package's ``static/`` data.

The page is static (no build step, nothing fetched from elsewhere) and talks to the JSON/SSE
routes with relative URLs, so it also works when the router is mounted under a prefix. Its
markdown renderer (markdown-it) and sanitizer (DOMPurify) are vendored under
``static/vendor/`` with their licences.
"""

from __future__ import annotations

import functools
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response

from ..errors import NotFound
from .errors import error_response

# The page runs only its own scripts and style; text becomes markup only through markdown-it
# (raw HTML off) and DOMPurify's allow-list, and this policy is a second wall should either
# ever break: no inline script or style, no eval, nothing from another origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

JS = "text/javascript; charset=utf-8"

# Every file ``/static/`` serves; anything else is 404.
ASSETS = {
    "app.js": JS,
    "markdown.js": JS,
    "style.css": "text/css; charset=utf-8",
    "vendor/markdown-it.min.js": JS,
    "vendor/purify.min.js": JS,
}


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


async def static_asset(request: Request) -> Response:
    """One of the page's scripts or its style sheet (``/static/app.js`` …)."""
    name = request.path_params["name"]
    media_type = ASSETS.get(name)
    if media_type is None:
        return error_response(NotFound("there is no such file"))
    return _asset(name, media_type)
