"""The web page in a real browser (Debian's Chromium, driven by Playwright) against a real server:
a turn, Stop, regenerate, edit, continue, copy, feedback, the queue, errors, replies that
outlive a reload, a dropped network or a second tab, the keyboard, the themes and a phone.

The server is ``chatstream serve --model mock`` in a subprocess, with one generation slot so a
second session has to queue, and the default detach grace, so that a reply goes on while its
page reloads. Each test gets a fresh browser context, hence a fresh session.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, expect

from .browser import (
    REPLY,
    STOPPED,
    flaky_network,
    mock_reply,
    new_context,
    open_page,
    page_server,
    partial_reply,
    screenshot,
    send,
    stored_messages,
    stored_reply,
    wait_until_idle,
)

TOKEN_DELAY = 0.05
LONG = " ".join(f"word{i}" for i in range(40))  # a reply of about three seconds
SERVE_ARGS = [
    *("--model", "mock", "--mock-token-delay", str(TOKEN_DELAY), "--max-concurrent", "1"),
    *("--rate-limit", "0", "--max-per-client", "0"),  # every test's browser is 127.0.0.1
    *("--log-level", "warning"),
]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The base URL of a mock-model server with the embedded store and one generation slot."""
    with page_server(SERVE_ARGS) as server:
        yield server.url


@pytest.fixture
def page(context: BrowserContext) -> Page:
    page = open_page(context)
    expect(page.locator("#empty")).to_be_visible()
    return page


def requests_to(page: Page, fragment: str) -> list[Request]:
    """The requests the page makes from now on whose URL contains ``fragment``."""
    seen: list[Request] = []
    page.on("request", lambda request: seen.append(request) if fragment in request.url else None)
    return seen


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
    reply = page.locator(".message.assistant")
    first_id = reply.get_attribute("data-message-id")
    assert first_id

    reply.locator(".regenerate").click()
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


def test_stop_asks_the_server_and_keeps_the_partial_reply_which_survives_a_reload(
    page: Page,
) -> None:
    stops = requests_to(page, "/stop_generation")
    send(page, LONG)
    partial_reply(page)
    page.click("#stop")

    reply = page.locator(".message.assistant")
    expect(reply).to_have_class(STOPPED)
    expect(reply.locator(".message-status")).to_have_text("Stopped")
    assert [request.method for request in stops] == ["POST"]
    assert stops[0].post_data_json == {"message_id": reply.get_attribute("data-message-id")}
    shown = page.locator(REPLY).text_content() or ""
    final = mock_reply(LONG)
    assert shown and final.startswith(shown) and shown != final
    expect(page.locator("#send")).to_be_disabled()  # enabled again once something is typed
    expect(reply.locator(".regenerate")).to_be_enabled()
    expect(reply.locator(".continue")).to_be_visible()

    stored = stored_reply(page)
    assert stored["finish_reason"] == "cancelled"
    assert stored["content"] == shown

    page.reload()
    expect(page.locator(".message.user .content")).to_have_text([LONG])
    expect(page.locator(REPLY)).to_have_text(stored["content"])
    expect(page.locator(".message.assistant")).to_have_class(STOPPED)


def test_escape_stops_the_reply(page: Page) -> None:
    send(page, LONG)
    partial_reply(page)
    page.keyboard.press("Escape")
    expect(page.locator(".message.assistant")).to_have_class(STOPPED)
    assert stored_reply(page)["finish_reason"] == "cancelled"


def test_a_reload_mid_reply_attaches_to_it_and_shows_it_to_the_end(page: Page) -> None:
    attaches = requests_to(page, "/chat_stream/")
    send(page, LONG)
    before = partial_reply(page)
    message_id = page.locator(".message.assistant").get_attribute("data-message-id")

    page.reload()
    expect(page.locator(".message.user .content")).to_have_text([LONG])
    expect(page.locator(".message.assistant.streaming")).to_have_count(1)
    expect(page.locator("#stop")).to_be_enabled()
    expect(page.locator(REPLY)).to_have_text(mock_reply(LONG))
    wait_until_idle(page)
    assert before and stored_reply(page)["content"] == mock_reply(LONG)
    assert [request.url.split("/chat_stream/")[1].split("?")[0] for request in attaches] == [
        message_id
    ]
    expect(page.locator(".message.assistant")).not_to_have_class(STOPPED)


def test_a_dropped_connection_resumes_after_the_last_event_seen(
    browser: Browser, server: str
) -> None:
    with flaky_network(server) as network:
        context = new_context(browser, network.url)
        try:
            page = open_page(context)
            attaches = requests_to(page, "/chat_stream/")
            send(page, LONG)
            partial_reply(page)
            network.refusing = True
            network.drop()
            expect(page.locator("#notice")).to_contain_text("reconnecting")
            network.refusing = False
            expect(page.locator(REPLY)).to_have_text(mock_reply(LONG))
            wait_until_idle(page)
            expect(page.locator("#notice")).to_be_hidden()
            expect(page.locator(".error")).to_be_hidden()
            resumed_after = [int(r.headers.get("last-event-id", "0")) for r in attaches]
            assert resumed_after and resumed_after[-1] > 0  # not from the start again
            assert stored_reply(page)["content"] == mock_reply(LONG)
        finally:
            context.close()


def test_a_second_tab_follows_the_running_reply_and_can_stop_it(
    context: BrowserContext, page: Page
) -> None:
    send(page, LONG)
    partial_reply(page)
    second = open_page(context)  # the same cookie: the same conversation
    expect(second.locator(".message.user .content")).to_have_text([LONG])
    partial_reply(second)
    second.click("#stop")
    expect(page.locator(".message.assistant")).to_have_class(STOPPED)
    expect(second.locator(".message.assistant")).to_have_class(STOPPED)
    expect(second.locator(REPLY)).to_have_text(page.locator(REPLY).text_content() or "")


def test_a_second_tab_that_sends_meanwhile_follows_instead_of_failing(
    context: BrowserContext, page: Page
) -> None:
    send(page, "Hello")
    wait_until_idle(page)
    second = open_page(context)  # the same conversation
    expect(second.locator(REPLY)).to_have_text([mock_reply("Hello")])
    send(page, LONG)
    partial_reply(page)
    send(second, "Me too")
    expect(second.locator("#notice")).to_contain_text("another tab")
    expect(second.locator(".error")).to_be_hidden()
    expect(second.locator(REPLY)).to_have_text([mock_reply("Hello"), mock_reply(LONG)])
    expect(second.locator("#input")).to_have_value("Me too")  # not lost, not sent
    wait_until_idle(second)
    stored = [m["content"] for m in stored_messages(page)]
    assert stored == ["Hello", mock_reply("Hello"), LONG, mock_reply(LONG)]


def test_a_sent_message_can_be_edited(page: Page) -> None:
    send(page, "The first version")
    wait_until_idle(page)
    user = page.locator(".message.user")
    expect(user).to_have_attribute("data-message-id", re.compile(".+"))
    user.locator(".edit").click()
    editor = user.locator(".edit-input")
    expect(editor).to_have_value("The first version")
    editor.fill("The second\nversion")
    editor.press("Enter")
    expect(page.locator(".message.user .content")).to_have_text(["The second\nversion"])
    expect(page.locator(REPLY)).to_have_text(mock_reply("The second\nversion"))
    wait_until_idle(page)
    expect(page.locator(".message")).to_have_count(2)
    stored = stored_messages(page)
    assert [m["content"] for m in stored] == [
        "The second\nversion",
        mock_reply("The second\nversion"),
    ]


def test_escape_cancels_an_edit(page: Page) -> None:
    send(page, "Keep me")
    wait_until_idle(page)
    page.locator(".message.user .edit").click()
    page.locator(".edit-input").fill("Not this")
    page.locator(".edit-input").press("Escape")
    expect(page.locator(".edit-input")).to_have_count(0)
    expect(page.locator(".message.user .content")).to_have_text(["Keep me"])
    assert stored_messages(page)[0]["content"] == "Keep me"


def test_a_reply_cut_at_the_length_limit_can_be_continued(page: Page) -> None:
    assert page.request.post("/set_generation_params", data={"max_new_tokens": 6}).ok
    send(page, "Go on please")
    wait_until_idle(page)
    reply = page.locator(".message.assistant")
    expect(reply.locator(".message-status")).to_have_text("Cut off at the length limit")
    cut = page.locator(REPLY).text_content() or ""
    assert cut and mock_reply("Go on please").startswith(cut)

    assert page.request.post("/set_generation_params", data={"max_new_tokens": 200}).ok
    reply.locator(".continue").click()
    expect(page.locator(REPLY)).to_have_text(mock_reply("Go on please"))
    wait_until_idle(page)
    expect(page.locator(".message.assistant")).to_have_count(1)
    expect(reply.locator(".message-status")).to_have_text("")
    expect(reply.locator(".continue")).to_be_hidden()
    stored = stored_messages(page)
    assert [m["content"] for m in stored] == ["Go on please", mock_reply("Go on please")]


def test_a_reload_while_a_reply_is_continued_shows_the_whole_reply_at_its_end(page: Page) -> None:
    assert page.request.post("/set_generation_params", data={"max_new_tokens": 3}).ok
    send(page, LONG)
    wait_until_idle(page)
    assert page.request.post("/set_generation_params", data={"max_new_tokens": 200}).ok
    page.locator(".message.assistant .continue").click()
    partial_reply(page)
    page.reload()
    expect(page.locator(".message.assistant.streaming")).to_have_count(1)
    wait_until_idle(page)
    expect(page.locator(REPLY)).to_have_text(mock_reply(LONG))
    assert stored_reply(page)["content"] == mock_reply(LONG)


def test_a_reply_can_be_copied(context: BrowserContext, page: Page) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    send(page, "Copy **this** text")
    wait_until_idle(page)
    reply = page.locator(".message.assistant")
    reply.locator(".copy").click()
    expect(reply.locator(".action-status")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == mock_reply("Copy **this** text")


def test_a_reply_can_be_liked(page: Page) -> None:
    send(page, "Rate me")
    wait_until_idle(page)
    reply = page.locator(".message.assistant")
    reply.locator(".like").click()
    expect(reply.locator(".action-status")).to_have_text("Feedback recorded")
    expect(reply.locator(".like")).to_have_attribute("aria-pressed", "true")
    expect(reply.locator(".dislike")).to_have_attribute("aria-pressed", "false")
    page.reload()
    expect(page.locator(".message.assistant .like")).to_have_attribute("aria-pressed", "true")


def test_a_second_session_sees_its_queue_position_and_wait(
    browser: Browser, page: Page, server: str
) -> None:
    send(page, "warm up")  # a service time to estimate the wait from
    wait_until_idle(page)
    send(page, LONG)
    partial_reply(page)

    other = new_context(browser, server, viewport={"width": 390, "height": 760})
    try:
        waiting = open_page(other)
        send(waiting, "Me next")
        status = waiting.locator(".queue-status")
        expect(status).to_have_text(re.compile(r"^Waiting in queue: position 1, about "))
        page.click("#stop")
        expect(waiting.locator(REPLY)).to_have_text(mock_reply("Me next"))
        expect(status).to_be_hidden()
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


def test_too_many_requests_says_when_to_try_again(browser: Browser) -> None:
    args = [*SERVE_ARGS, "--rate-limit", "1"]
    with page_server(args) as limited:
        context = new_context(browser, limited.url)
        try:
            page = open_page(context)
            send(page, "One")
            wait_until_idle(page)
            send(page, "Two")
            error = page.locator(".error")
            expect(error).to_contain_text("faster than this server allows")
            expect(error).to_contain_text("Try again in ")
            expect(page.locator("#input")).to_have_value("Two")
            expect(page.locator(".message")).to_have_count(2)
        finally:
            context.close()


def test_enter_sends_and_shift_enter_starts_a_new_line(page: Page) -> None:
    page.click("#input")
    page.keyboard.type("first line")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    expect(page.locator("#input")).to_have_value("first line\nsecond line")
    expect(page.locator(".message")).to_have_count(0)
    page.keyboard.press("Enter")
    expect(page.locator(".message.user .content")).to_have_text(["first line\nsecond line"])
    expect(page.locator("#input")).to_have_value("")
    wait_until_idle(page)


def test_the_controls_have_names_for_screen_readers(page: Page) -> None:
    send(page, "Label me")
    wait_until_idle(page)
    for role, name in [
        ("textbox", "Your message"),
        ("button", "Send"),
        ("button", "Stop"),
        ("button", "New chat"),
        ("button", "Switch to the dark theme"),
        ("button", "Good reply"),
        ("button", "Bad reply"),
        ("log", "Conversation"),
    ]:
        expect(page.get_by_role(role, name=name, exact=True)).to_have_count(1)  # type: ignore[arg-type]
    expect(page.get_by_role("complementary", name="Conversations")).to_have_count(1)


def test_the_theme_follows_the_system_and_the_toggle_which_is_remembered(
    browser: Browser, server: str
) -> None:
    background = "getComputedStyle(document.body).backgroundColor"
    light = new_context(browser, server, color_scheme="light")
    dark = new_context(browser, server, color_scheme="dark")
    try:
        page = open_page(light)
        send(page, "A **light** reply with `code`\n\n```js\nconst x = 1;\n```\n\nDone.")
        wait_until_idle(page)
        light_background = page.evaluate(background)
        screenshot(page, "chat-light.png")
        page.click("#theme")
        expect(page.locator("html")).to_have_attribute("data-theme", "dark")
        assert page.evaluate(background) != light_background
        page.reload()
        expect(page.locator("html")).to_have_attribute("data-theme", "dark")
        dark_background = page.evaluate(background)

        other = open_page(dark)
        expect(other.locator("html")).not_to_have_attribute("data-theme", "light")
        assert other.evaluate(background) == dark_background
        send(other, "A **dark** reply with `code`\n\n```js\nconst x = 1;\n```\n\nDone.")
        wait_until_idle(other)
        screenshot(other, "chat-dark.png")
        other.click("#theme")
        assert other.evaluate(background) == light_background
    finally:
        light.close()
        dark.close()


def test_the_page_fits_a_phone_and_its_list_slides_in(browser: Browser, server: str) -> None:
    phone = new_context(
        browser, server, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    try:
        page = open_page(phone)
        send(page, "Does this fit on a small screen with a longer line of text in it?")
        wait_until_idle(page)
        sidebar = page.locator("#sidebar")
        expect(sidebar).not_to_be_in_viewport()
        for selector in ("#input", "#send", "#stop", "#menu", "#theme"):
            expect(page.locator(selector)).to_be_in_viewport()
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow == 0
        screenshot(page, "chat-phone.png")

        page.click("#menu")
        expect(page.locator("#menu")).to_have_attribute("aria-expanded", "true")
        expect(sidebar).to_be_in_viewport(ratio=1)  # slid in all the way
        expect(page.locator(".conversation-item")).to_have_count(1)
        screenshot(page, "chat-phone-list.png")
        page.locator(".conversation-item .conversation-open").click()
        expect(sidebar).not_to_be_in_viewport()
    finally:
        phone.close()
