from __future__ import annotations

import re
from importlib.resources import files
from urllib.parse import urljoin

from chatstream.app import create_app
from chatstream.http.page import ASSETS
from chatstream.settings import Settings

from ..conftest import client_for

SCRIPTS = {
    "static/vendor/markdown-it.min.js",
    "static/vendor/purify.min.js",
    "static/markdown.js",
    "static/app.js",
}


async def test_the_page_and_its_assets_are_served_from_the_package() -> None:
    app = create_app(Settings(model="mock", mock_token_delay=0.0, secret_key="k"))
    async with client_for(app) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        policy = page.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "style-src 'self';" in policy
        assert "unsafe" not in policy  # no inline script or style, no eval
        for test_id in ("input", "send", "stop", "new-chat", "queue-status", "sidebar", "theme"):
            assert f'id="{test_id}"' in page.text

        links = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert set(links) == {"static/style.css", *SCRIPTS, "data:,"}
        assert {link.removeprefix("static/") for link in links if link != "data:,"} == set(ASSETS)
        for link in links[1:]:
            asset = await client.get(urljoin("http://127.0.0.1/", link))
            assert asset.status_code == 200
            assert asset.headers["content-type"] == ASSETS[link.removeprefix("static/")]
            assert asset.headers["x-content-type-options"] == "nosniff"
            assert asset.text.strip()

        for unknown in ("/static/index.html", "/static/vendor/README.md", "/static/../app.py"):
            missing = await client.get(unknown)
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "not_found"


def test_the_vendored_scripts_ship_with_their_licences() -> None:
    vendor = files("chatstream.http") / "static" / "vendor"
    assert (
        "MIT" in (vendor / "markdown-it.LICENSE").read_text()
        or "Permission is hereby" in (vendor / "markdown-it.LICENSE").read_text()
    )
    assert "Apache License" in (vendor / "dompurify.LICENSE").read_text()
    readme = (vendor / "README.md").read_text()
    assert "markdown-it@15.0.3" in readme and "dompurify@3.5.0" in readme


async def test_the_page_s_own_scripts_build_no_markup_from_strings() -> None:
    """Text reaches the page as text nodes, or as the DocumentFragment DOMPurify returns from
    markdown-it's output (raw HTML off): no script of the page's own assigns HTML or evaluates
    code."""
    app = create_app(Settings(model="mock", mock_token_delay=0.0, secret_key="k"))
    async with client_for(app) as client:
        scripts = {
            name: (await client.get(f"/static/{name}")).text for name in ("app.js", "markdown.js")
        }
    unsafe = r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|Function\("
    for name, script in scripts.items():
        assert not re.search(unsafe, script), name
    assert "html: false" in scripts["markdown.js"]
    assert "RETURN_DOM_FRAGMENT: true" in scripts["markdown.js"]
