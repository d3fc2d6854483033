"""Replies rendered as markdown in a real browser: what renders, that hostile text never runs and
never becomes an element outside the renderer's allow-list, and that streaming re-renders only
the growing reply, and not at every delta.

The mock engine echoes the user's text (spacing and lines kept), so a test has it say markdown.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypedDict

import pytest
from playwright.sync_api import BrowserContext, Dialog, Page, expect

from .browser import REPLY, mock_reply, open_page, page_server, send, wait_until_idle

SERVE_ARGS = [
    *("--model", "mock", "--mock-token-delay", "0.03"),
    *("--rate-limit", "0", "--max-per-client", "0", "--log-level", "warning"),
]

# What a rendered message may hold: the renderer's tags (markdown.js), and the code blocks'
# header with its Copy button.
ALLOWED = {
    *("p", "br", "hr", "em", "strong", "s", "code", "pre", "blockquote", "ul", "ol", "li"),
    *("h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead", "tbody", "tr", "th", "td"),
    *("div", "span", "button"),
}
ALLOWED_ATTRIBUTES = {"href", "title", "class", "start", "target", "rel", "type", "aria-label"}

MARKDOWN = """# A heading

Some *emphasis*, **strong** text and `inline code`.

- one
- two

1. first
2. second

> quoted

| left | right |
|:-----|------:|
| a    | 1     |

```python
print("hi")
```

[a link](https://example.com/page) and <https://example.org>

End."""

# The OWASP XSS filter evasion cheat sheet's classics, as markdown and as raw HTML.
HOSTILE = [
    "<script>window.__pwned = 1</script>",
    '<img src=x onerror="window.__pwned = 2">',
    "<svg onload=window.__pwned=3>",
    '<iframe src="javascript:window.__pwned=4"></iframe>',
    '<a href="javascript:window.__pwned=5">raw link</a>',
    "[click me](javascript:window.__pwned=6)",
    "[click me](JaVaScRiPt:window.__pwned=7)",
    "[click me](jav&#x61;script:window.__pwned=8)",
    "[click me](&#106;avascript:window.__pwned=9)",
    "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "![img](x onerror=window.__pwned=10)",
    '![img](javascript:window.__pwned=11 "title")',
    '<https://x.test/"onmouseover="window.__pwned=12>',
    '**<img src=x onerror="window.__pwned=13">**',
    "> <svg><animate onbegin=window.__pwned=14 attributeName=x dur=1s>",
    '`<img src=x onerror="window.__pwned=15">`',
    '<div style="background:url(javascript:window.__pwned=16)">styled</div>',
    "<math><mtext><table><mglyph><style><img src=x onerror=window.__pwned=17>",
    '[x](vbscript:msgbox("pwned"))',
    '<form action="javascript:window.__pwned=18"><button>go</button></form>',
    "<details open ontoggle=window.__pwned=19>",
]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with page_server(SERVE_ARGS) as server:
        yield server.url


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return open_page(context)


def test_a_reply_renders_as_markdown(page: Page) -> None:
    send(page, MARKDOWN)
    wait_until_idle(page)
    reply = page.locator(REPLY)
    expect(reply.locator("h1")).to_have_text("A heading")
    expect(reply.locator("em")).to_have_text("emphasis")
    expect(reply.locator("strong")).to_have_text("strong")
    expect(reply.locator("p > code")).to_have_text("inline code")
    expect(reply.locator("ul > li")).to_have_text(["one", "two"])
    expect(reply.locator("ol > li")).to_have_text(["first", "second"])
    expect(reply.locator("blockquote")).to_have_text("quoted")
    expect(reply.locator("th")).to_have_text(["left", "right"])
    expect(reply.locator("td.align-right")).to_have_text("1")
    code = reply.locator(".code-block")
    expect(code.locator("pre code.language-python")).to_have_text('print("hi")\n')
    expect(code.locator(".code-language")).to_have_text("python")
    expect(code.locator(".copy-code")).to_have_accessible_name("Copy the code")
    links = reply.locator("a")
    expect(links).to_have_count(2)
    for index, href in enumerate(["https://example.com/page", "https://example.org"]):
        expect(links.nth(index)).to_have_attribute("href", href)
        expect(links.nth(index)).to_have_attribute("target", "_blank")
        expect(links.nth(index)).to_have_attribute("rel", "noopener noreferrer nofollow")
    # The user's own message stays as typed.
    expect(page.locator(".message.user .content")).to_have_text(MARKDOWN)
    assert page.locator(".message.user .content *").count() == 0


def test_a_code_block_can_be_copied(context: BrowserContext, page: Page) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    send(page, "```sh\nmake run\n```\n\nThat is all.")
    wait_until_idle(page)
    button = page.locator(".copy-code")
    button.click()
    expect(button).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "make run\n"


class Element(TypedDict):
    tag: str
    attributes: list[tuple[str, str]]


def rendered_elements(page: Page) -> list[Element]:
    """Every element inside the messages' content, with its attributes."""
    elements: list[Element] = page.evaluate(
        """() => [...document.querySelectorAll('.message .content *')].map((e) => ({
            tag: e.localName, attributes: [...e.attributes].map((a) => [a.name, a.value]),
        }))"""
    )
    return elements


def test_hostile_text_never_runs_and_never_leaves_the_allow_list(page: Page) -> None:
    dialogs: list[str] = []

    def dialog(opened: Dialog) -> None:
        dialogs.append(opened.message)
        opened.dismiss()

    page.on("dialog", dialog)
    text = "\n\n".join(HOSTILE)
    send(page, text)
    wait_until_idle(page)
    expect(page.locator(".message.user .content")).to_have_text(text)
    for reload in (False, True):
        if reload:
            page.reload()
            expect(page.locator(REPLY)).to_contain_text("This is the mock engine")
        for node in page.locator(".message .content *").all():
            node.hover()  # onmouseover and the like, had any slipped through
        page.wait_for_timeout(300)
        assert page.evaluate("window.__pwned") is None
        assert dialogs == []
        for element in rendered_elements(page):
            assert element["tag"] in ALLOWED, element
            for name, value in element["attributes"]:
                assert name in ALLOWED_ATTRIBUTES, element
                if name == "href":
                    assert value.startswith(("https://", "http://")), element
    # Raw HTML is shown as the text it is.
    expect(page.locator(REPLY)).to_contain_text("<script>window.__pwned = 1</script>")
    expect(page.locator(REPLY)).to_contain_text('<img src=x onerror="window.__pwned = 2">')


def test_streaming_re_renders_only_the_growing_reply_and_not_at_every_delta(page: Page) -> None:
    send(page, "An **earlier** message")
    wait_until_idle(page)
    page.evaluate(
        """() => {
            window.__mutations = { earlier: 0, growing: 0 };
            const earlier = new MutationObserver((records) => {
                window.__mutations.earlier += records.length;
            });
            for (const node of document.querySelectorAll('.message')) {
                earlier.observe(node, { subtree: true, childList: true, characterData: true });
            }
            const grow = new MutationObserver(() => {
                const replies = document.querySelectorAll('.message.assistant.streaming');
                for (const reply of replies) {
                    if (reply.dataset.watched) continue;
                    reply.dataset.watched = '1';
                    new MutationObserver((records) => {
                        window.__mutations.growing += records.filter(
                            (r) => r.target.classList && r.target.classList.contains('content')
                        ).length;
                    }).observe(reply.querySelector('.content'), { childList: true });
                }
            });
            grow.observe(document.getElementById('messages'), { childList: true });
        }"""
    )
    words = " ".join(f"w{i}" for i in range(60))
    send(page, words)
    wait_until_idle(page)
    expect(page.locator(REPLY).last).to_have_text(mock_reply(words))
    mutations = page.evaluate("window.__mutations")
    deltas = 60 + 14  # the echoed words, then the mock's filler
    assert mutations["earlier"] == 0
    assert 2 <= mutations["growing"] < deltas / 1.5
