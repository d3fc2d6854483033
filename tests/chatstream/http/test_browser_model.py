"""The web page as a user meets it: ``chatstream serve`` on the bundled model, a browser with no
cookie, one turn, and a reload while the model is still writing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Error, expect

from .browser import (
    REPLY,
    open_page,
    page_server,
    partial_reply,
    send,
    stored_reply,
    wait_until_idle,
)

pytestmark = pytest.mark.model

MODEL_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    args = ["--log-level", "warning"]
    with page_server(args, ready_path="/readyz") as server:
        yield server.url


def test_a_first_visit_one_turn_and_a_reload_mid_reply(context: BrowserContext) -> None:
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(message.text)

    def page_error(error: Error) -> None:
        problems.append(str(error))

    page = open_page(context)
    page.on("console", console)
    page.on("pageerror", page_error)
    expect(page.locator("#empty")).to_be_visible()
    expect(page.locator(".error")).to_be_hidden()
    params = {"temperature": 0, "max_new_tokens": 64}
    assert page.request.post("/set_generation_params", data=params).ok

    send(page, "What is the capital of France? Answer in one word.")
    expect(page.locator(REPLY)).to_contain_text("Paris", timeout=MODEL_TIMEOUT_MS)
    expect(page.locator("#stop")).to_be_disabled(timeout=MODEL_TIMEOUT_MS)
    expect(page.locator(".error")).to_be_hidden()

    attaches: list[str] = []
    page.on("request", lambda r: attaches.append(r.url) if "/chat_stream/" in r.url else None)
    send(page, "Write a long story about a dragon who learns to bake bread.")
    partial = partial_reply(page)
    page.reload()
    page.on("console", console)
    page.on("pageerror", page_error)
    expect(page.locator(".message.assistant")).to_have_count(2)
    expect(page.locator("#stop")).to_be_disabled(timeout=MODEL_TIMEOUT_MS)
    wait_until_idle(page)
    stored = stored_reply(page)
    shown = page.locator(REPLY).last.text_content() or ""
    rendered = page.evaluate("(text) => chatMarkdown.render(text).textContent", stored["content"])
    assert shown == rendered and len(shown) > len(partial)
    assert stored.get("finish_reason") in ("stop", "length")
    assert attaches, "the reloaded page did not attach to the running reply"
    expect(page.locator(".error")).to_be_hidden()
    assert problems == []
