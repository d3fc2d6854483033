"""The web page in a real browser (Debian's Chromium, driven by Playwright) against a real server.

The server is ``chatstream serve --model mock`` in a subprocess, with one generation slot so a
second session has to queue. Each test gets a fresh browser context, hence a fresh session.
Without ``/usr/bin/chromium`` these tests skip, or fail when ``CI`` is set.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from chatstream.engines.mock import FILLER
from chatstream.testing import serve

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
TOKEN_DELAY = 0.05
TIMEOUT_MS = 10_000

REPLY = ".message.assistant:not([hidden]) .content"
STOPPED = re.compile(r"\bstopped\b")


def mock_reply(user_input: str) -> str:
    return " ".join([*user_input.split(), *FILLER])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The base URL of a mock-model server with the embedded store and one generation slot."""
    args = [
        *("--model", "mock", "--mock-token-delay", str(TOKEN_DELAY), "--max-concurrent", "1"),
        *("--detach-grace", "0"),  # Stop aborts the request: the reply ends with it
        *("--log-level", "warning"),
    ]
    with serve(args, secret_key="browser-test-secret", ready_path="/healthz", timeout=30) as server:
        yield server.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        yield launch(playwright)


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


@pytest.fixture
def context(browser: Browser, server: str) -> Iterator[BrowserContext]:
    context = browser.new_context(base_url=server, viewport={"width": 1000, "height": 760})
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    page = context.new_page()
    page.goto("/")
    expect(page.locator("#empty")).to_be_visible()
    return page


def send(page: Page, text: str) -> None:
    page.fill("#input", text)
    expect(page.locator("#send")).to_be_enabled()  # once the history has loaded
    page.press("#input", "Enter")


def partial_reply(page: Page) -> str:
    """The reply's text the first moment some, not all, of it has arrived."""
    handle = page.wait_for_function(
        f"""() => {{
            const reply = document.querySelector('{REPLY}');
            const text = reply ? reply.textContent : '';
            return text && reply.closest('.streaming') ? text : null;
        }}"""
    )
    text: str = handle.json_value()
    return text


def wait_until_idle(page: Page) -> None:
    expect(page.locator("#stop")).to_be_disabled()


def stored_messages(page: Page) -> list[dict[str, Any]]:
    response = page.request.get("/get_prompt")
    assert response.ok
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def stored_reply(page: Page) -> dict[str, Any]:
    """The session's last reply once the server has stored it (the client does not wait)."""
    deadline = time.monotonic() + 5
    while not (messages := stored_messages(page)) or messages[-1]["role"] != "assistant":
        assert time.monotonic() < deadline, "the reply was never stored"
        time.sleep(0.05)
    return messages[-1]


def test_a_reply_streams_in_then_regenerate_replaces_it(page: Page) -> None:
    send(page, "Hello streaming world")
    final = mock_reply("Hello streaming world")

    partial = partial_reply(page)
    assert partial != final and final.startswith(partial)
    expect(page.locator("#send")).to_be_disabled()
    expect(page.locator("#stop")).to_be_enabled()
    expect(page.locator(".message.user .content")).to_have_text(["Hello streaming world"])
    expect(page.locator(REPLY)).to_have_text(final)
    wait_until_idle(page)
    first_id = page.locator(".message.assistant").get_attribute("data-message-id")
    assert first_id

    page.click("#regenerate")
    assert final.startswith(partial_reply(page))
    expect(page.locator(".message.assistant")).to_have_count(1)
    wait_until_idle(page)
    expect(page.locator(REPLY)).to_have_text(final)
    second_id = page.locator(".message.assistant").get_attribute("data-message-id")
    assert second_id and second_id != first_id

    stored = stored_messages(page)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["message_id"] == second_id
    assert stored[1]["content"] == final


def test_stop_keeps_the_partial_reply_which_survives_a_reload(page: Page) -> None:
    text = " ".join(f"word{i}" for i in range(40))
    final = mock_reply(text)
    send(page, text)
    partial_reply(page)
    page.click("#stop")

    reply = page.locator(".message.assistant")
    expect(reply).to_have_class(STOPPED)
    expect(reply.locator(".message-status")).to_have_text("Stopped")
    shown = page.locator(REPLY).text_content() or ""
    assert shown and final.startswith(shown) and shown != final
    expect(page.locator("#send")).to_be_disabled()  # enabled again once something is typed
    expect(page.locator("#regenerate")).to_be_enabled()

    stored = stored_reply(page)
    assert stored["finish_reason"] == "cancelled"
    assert stored["content"].startswith(shown)

    page.reload()
    expect(page.locator(".message.user .content")).to_have_text([text])
    expect(page.locator(REPLY)).to_have_text(stored["content"])
    expect(page.locator(".message.assistant")).to_have_class(STOPPED)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "chat-desktop.png")

    page.click("#new-chat")
    expect(page.locator(".message")).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()
    assert stored_messages(page) == []
    page.reload()
    expect(page.locator("#empty")).to_be_visible()
    expect(page.locator(".message")).to_have_count(0)


def test_a_reply_can_be_liked(page: Page) -> None:
    send(page, "Rate me")
    wait_until_idle(page)
    reply = page.locator(".message.assistant")
    reply.locator(".like").click()
    expect(reply.locator(".feedback-status")).to_have_text("Feedback recorded")
    expect(reply.locator(".like")).to_have_attribute("aria-pressed", "true")
    expect(reply.locator(".dislike")).to_have_attribute("aria-pressed", "false")


def test_markup_is_shown_as_text(page: Page) -> None:
    text = '<img src=x onerror="window.injected=1"> <b>bold</b>'
    send(page, text)
    wait_until_idle(page)
    expect(page.locator(".message.user .content")).to_have_text(text)
    expect(page.locator(REPLY)).to_have_text(mock_reply(text))
    page.reload()
    expect(page.locator(REPLY)).to_have_text(mock_reply(text))
    assert page.locator(".message img, .message b").count() == 0
    assert page.evaluate("window.injected") is None


def test_a_second_session_sees_its_queue_position(
    browser: Browser, page: Page, server: str
) -> None:
    send(page, " ".join(f"word{i}" for i in range(30)))
    partial_reply(page)

    other = browser.new_context(base_url=server, viewport={"width": 390, "height": 760})
    try:
        waiting = other.new_page()
        waiting.goto("/")
        send(waiting, "Me next")
        expect(waiting.locator(".queue-status")).to_have_text("Waiting in queue: position 1")
        page.click("#stop")
        expect(waiting.locator(REPLY)).to_have_text(mock_reply("Me next"))
        expect(waiting.locator(".queue-status")).to_be_hidden()
    finally:
        other.close()


def test_an_error_from_the_server_is_shown_and_the_input_kept(page: Page) -> None:
    too_long = "x" * 16_001
    send(page, too_long)
    expect(page.locator(".error")).to_contain_text("user_input is over 16000 characters")
    expect(page.locator(".message")).to_have_count(0)
    expect(page.locator("#input")).to_have_value(too_long)

    page.fill("#input", "Fine now")
    page.press("#input", "Enter")
    expect(page.locator(".error")).to_be_hidden()
    expect(page.locator(REPLY)).to_have_text(mock_reply("Fine now"))


def test_the_page_fits_a_phone_screen(browser: Browser, server: str) -> None:
    phone = browser.new_context(
        base_url=server, viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True
    )
    try:
        page = phone.new_page()
        page.goto("/")
        send(page, "Does this fit on a small screen with a longer line of text in it?")
        wait_until_idle(page)
        for selector in ("#input", "#send", "#stop", "#regenerate", "#new-chat"):
            expect(page.locator(selector)).to_be_in_viewport()
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow == 0
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "chat-phone.png")
    finally:
        phone.close()
