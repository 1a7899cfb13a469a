"""Debian's Chromium for the browser tests, driven by Playwright.

A browser test module marks itself `NEEDS_CHROMIUM` (skipped, before its stack starts, where
Chromium is missing) and takes the `page` fixture of tests/e2e/conftest.py: a fresh browser
profile per test, in one Chromium per module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP *.localhost 127.0.0.1",
]  # fmt: skip
TIMEOUT_MS = 30_000

NEEDS_CHROMIUM = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"
)
