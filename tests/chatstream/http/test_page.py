from __future__ import annotations

import re
from urllib.parse import urljoin

from chatstream.app import create_app
from chatstream.settings import Settings

from ..conftest import client_for


async def test_the_page_and_its_assets_are_served_from_the_package() -> None:
    app = create_app(Settings(model="mock", mock_token_delay=0.0, secret_key="k"))
    async with client_for(app) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for test_id in ("input", "send", "stop", "regenerate", "new-chat", "queue-status"):
            assert f'id="{test_id}"' in page.text

        links = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert set(links) == {"static/style.css", "static/app.js", "data:,"}
        types = {"static/app.js": "text/javascript", "static/style.css": "text/css"}
        for link, media_type in types.items():
            asset = await client.get(urljoin("http://127.0.0.1/", link))
            assert asset.status_code == 200
            assert asset.headers["content-type"].startswith(media_type)
            assert asset.headers["x-content-type-options"] == "nosniff"
            assert asset.text.strip()


async def test_the_script_renders_text_never_markup() -> None:
    app = create_app(Settings(model="mock", mock_token_delay=0.0, secret_key="k"))
    async with client_for(app) as client:
        script = (await client.get("/static/app.js")).text
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", script)
