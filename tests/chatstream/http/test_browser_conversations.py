"""The conversation list in a real browser: new chat keeps the old one, switching, renaming and
deleting, titles, the shown one highlighted, and all of it after a reload (it is server-side).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from .browser import REPLY, mock_reply, open_page, page_server, screenshot, send, wait_until_idle

SERVE_ARGS = [
    *("--model", "mock", "--mock-token-delay", "0.01"),
    *("--rate-limit", "0", "--max-per-client", "0", "--log-level", "warning"),
]
ITEMS = ".conversation-item .conversation-open"
ACTIVE = ".conversation-item.active .conversation-open"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with page_server(SERVE_ARGS) as server:
        yield server.url


@pytest.fixture
def page(context: BrowserContext) -> Page:
    page = open_page(context)
    expect(page.locator("#no-conversations")).to_be_visible()
    return page


def say(page: Page, text: str) -> None:
    send(page, text)
    wait_until_idle(page)
    expect(page.locator(REPLY).last).to_have_text(mock_reply(text))


def test_new_chat_keeps_the_old_one_and_switching_shows_each(page: Page) -> None:
    say(page, "About cats")
    expect(page.locator(ITEMS)).to_have_text(["About cats"])  # titled by its first message
    page.click("#new-chat")
    expect(page.locator(".message")).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()
    say(page, "About dogs")
    expect(page.locator(ITEMS)).to_have_text(["About dogs", "About cats"])  # latest first
    expect(page.locator(ACTIVE)).to_have_text("About dogs")
    expect(page.locator(ACTIVE)).to_have_attribute("aria-current", "page")

    page.locator(ITEMS, has_text="About cats").click()
    expect(page.locator(".message.user .content")).to_have_text(["About cats"])
    expect(page.locator(ACTIVE)).to_have_text("About cats")
    say(page, "More cats")  # goes to the conversation shown
    expect(page.locator(".message.user .content")).to_have_text(["About cats", "More cats"])
    expect(page.locator(ITEMS)).to_have_text(["About cats", "About dogs"])
    screenshot(page, "chat-conversations.png")

    page.reload()  # the shown conversation and the list come back
    expect(page.locator(".message.user .content")).to_have_text(["About cats", "More cats"])
    expect(page.locator(ACTIVE)).to_have_text("About cats")
    expect(page.locator(ITEMS)).to_have_text(["About cats", "About dogs"])

    page.locator(ITEMS, has_text="About dogs").click()
    expect(page.locator(".message.user .content")).to_have_text(["About dogs"])
    page.reload()
    expect(page.locator(".message.user .content")).to_have_text(["About dogs"])

    cats = page.locator(".conversation-item", has_text="About cats").get_attribute("data-id")
    page.evaluate("(id) => { location.hash = id; }", cats)  # an address edited in place
    expect(page.locator(".message.user .content")).to_have_text(["About cats", "More cats"])
    expect(page.locator(ACTIVE)).to_have_text("About cats")


def test_a_conversation_can_be_renamed(page: Page) -> None:
    say(page, "Untitled thoughts")
    item = page.locator(".conversation-item").first
    item.locator(".conversation-rename").click()
    field = item.locator(".rename-input")
    expect(field).to_be_focused()
    field.fill("My <b>plans</b>")
    field.press("Enter")
    expect(page.locator(ITEMS)).to_have_text(["My <b>plans</b>"])
    assert page.locator(".conversation-item b").count() == 0
    page.reload()
    expect(page.locator(ITEMS)).to_have_text(["My <b>plans</b>"])
    listed = page.request.get("/conversations").json()["conversations"]
    assert [c["title"] for c in listed] == ["My <b>plans</b>"]

    item = page.locator(".conversation-item").first
    item.locator(".conversation-rename").click()
    item.locator(".rename-input").fill("Not kept")
    item.locator(".rename-input").press("Escape")
    expect(page.locator(ITEMS)).to_have_text(["My <b>plans</b>"])


def test_a_conversation_can_be_deleted(page: Page) -> None:
    say(page, "Keep this one")
    page.click("#new-chat")
    say(page, "Delete this one")
    doomed = page.locator(".conversation-item", has_text="Delete this one")
    doomed_id = doomed.get_attribute("data-id")

    page.once("dialog", lambda dialog: dialog.dismiss())
    doomed.locator(".conversation-delete").click()
    expect(page.locator(ITEMS)).to_have_count(2)

    page.once("dialog", lambda dialog: dialog.accept())
    doomed.locator(".conversation-delete").click()
    expect(page.locator(ITEMS)).to_have_text(["Keep this one"])
    expect(page.locator(".message")).to_have_count(0)  # it was the one shown
    assert page.request.get(f"/conversations/{doomed_id}").status == 404
    page.reload()
    expect(page.locator(ITEMS)).to_have_text(["Keep this one"])
    say(page, "A fresh start")
    expect(page.locator(ITEMS)).to_have_text(["A fresh start", "Keep this one"])
    expect(page.locator(".message.user .content")).to_have_text(["A fresh start"])
