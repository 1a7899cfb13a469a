"""`live_stack`: one LiveStack per test module; `browser`, `context` and `page` for the
browser tests (tests/e2e/browser.py).

A module chooses its stack with a module-level dict, e.g.
    LIVE_STACK = {"web_workers": 4, "celery_pool": "prefork"}
(defaults: 2 gunicorn workers and a solo Celery worker).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from .browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS
from .stack import LiveStack


@pytest.fixture(scope="module")
def live_stack(request: pytest.FixtureRequest) -> Iterator[LiveStack]:
    options = {"celery_pool": "solo", **getattr(request.module, "LIVE_STACK", {})}
    with LiveStack(**options) as stack:
        yield stack


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module's tests."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile (no cookies, no storage) for one test."""
    fresh = browser.new_context()
    fresh.set_default_timeout(TIMEOUT_MS)
    try:
        yield fresh
    finally:
        fresh.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()
