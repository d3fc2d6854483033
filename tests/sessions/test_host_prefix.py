"""On https the cookie is ``__Host-session``: browsers then take it only from this very host,
Secure, for Path=/, so a sibling subdomain or a plain-http page cannot plant one."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from sessions import RedisSessionStore
from sessions.cookie import HOST_PREFIX
from sessions.signing import CookieSigner

from .app import COOKIE, SECRET, client_for, cookie_value, make_app

PREFIXED = HOST_PREFIX + COOKIE


def attributes(response: httpx.Response, name: str) -> list[str]:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return header.split("; ")[1:]
    raise AssertionError(f"no {name} cookie set")


@pytest.mark.parametrize(
    ("base_url", "options", "headers"),
    [
        ("https://testserver", {}, {}),
        ("http://testserver", {"https_only": True}, {}),
        ("http://testserver", {"trust_forwarded_proto": True}, {"x-forwarded-proto": "https"}),
    ],
    ids=["https", "https_only", "trusted proxy"],
)
async def test_secure_requests_get_a_host_prefixed_cookie(
    store: RedisSessionStore, base_url: str, options: dict[str, Any], headers: dict[str, str]
) -> None:
    async with client_for(make_app(store, **options), base_url) as client:
        written = await client.post("/write", json={"a": 1}, headers=headers)
        assert cookie_value(written) is None
        value = cookie_value(written, PREFIXED)
        assert value is not None
        assert attributes(written, PREFIXED) == [
            "Path=/",
            "HttpOnly",
            "SameSite=Lax",
            f"Max-Age={30 * 86400}",
            "Secure",
        ]
        read = await client.get("/", headers={**headers, "cookie": f"{PREFIXED}={value}"})
    assert read.json() == written.json()
    assert "set-cookie" not in read.headers


async def test_a_plain_cookie_on_https_is_honoured_once_and_reissued(
    store: RedisSessionStore,
) -> None:
    async with client_for(make_app(store)) as plain:
        written = await plain.post("/write", json={"a": 1})
    old = cookie_value(written)
    assert old is not None
    async with client_for(make_app(store), "https://testserver") as client:
        migrated = await client.get("/", headers={"cookie": f"{COOKIE}={old}"})
        assert migrated.json() == written.json()
        assert attributes(migrated, COOKIE)[-2:] == ["Max-Age=0", "Secure"]
        prefixed = cookie_value(migrated, PREFIXED)
        assert prefixed is not None
        assert CookieSigner(SECRET).unsign(prefixed) == written.json()["id"]
        again = await client.get("/", headers={"cookie": f"{PREFIXED}={prefixed}"})
    assert again.json() == written.json()
    assert "set-cookie" not in again.headers


async def test_the_prefixed_cookie_wins_over_a_plain_one(store: RedisSessionStore) -> None:
    async with client_for(make_app(store), "https://testserver") as client:
        mine = await client.post("/write", json={"who": "me"})
        planted = await client.post("/write", json={"who": "planted"}, headers={"cookie": ""})
        prefixed, other = cookie_value(mine, PREFIXED), cookie_value(planted, PREFIXED)
        cookie = f"{COOKIE}={other}; {PREFIXED}={prefixed}"
        assert (await client.get("/", headers={"cookie": cookie})).json() == mine.json()


@pytest.mark.parametrize(
    "options",
    [{"host_prefix": False}, {"path": "/app"}, {"domain": "testserver"}],
    ids=["turned off", "path", "domain"],
)
async def test_no_prefix_when_turned_off_or_impossible(
    store: RedisSessionStore, options: dict[str, Any]
) -> None:
    async with client_for(make_app(store, **options), "https://testserver") as client:
        response = await client.post("/write", json={"a": 1})
    assert cookie_value(response, PREFIXED) is None
    assert "Secure" in attributes(response, COOKIE)


async def test_plain_http_keeps_the_plain_name(client: httpx.AsyncClient) -> None:
    response = await client.post("/write", json={"a": 1})
    assert cookie_value(response) is not None
    assert cookie_value(response, PREFIXED) is None
