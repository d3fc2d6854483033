"""Debian's Chromium, driven by Playwright, for the web page's browser tests.

Without ``/usr/bin/chromium`` these tests skip, or fail when ``CI`` is set. Each test gets a
fresh browser context (``context``), hence a fresh session, against the ``server`` fixture
its module defines.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, sync_playwright

from .browser import CHROMIUM, launch, new_context


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        yield launch(playwright)


@pytest.fixture
def context(browser: Browser, server: str) -> Iterator[BrowserContext]:
    context = new_context(browser, server)
    yield context
    context.close()
