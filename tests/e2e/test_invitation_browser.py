"""A new tenant's first administrator, in a real browser: the platform operator's command
prints a one-time link; the invitee opens it, creates an account, lands in the tenant's
console as tenant admin; the link is dead afterwards.

Debian's chromium driven by Playwright, as in test_browser.py.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from .browser import NEEDS_CHROMIUM
from .stack import LiveStack

pytestmark = [pytest.mark.e2e, pytest.mark.browser, NEEDS_CHROMIUM]

LIVE_STACK = {"web_workers": 1, "celery_pool": None}
PASSWORD = "a passphrase only the invitee knows 31"


def test_an_invitee_creates_an_account_from_the_link_and_sees_the_console(
    live_stack: LiveStack, page: Page
) -> None:
    live_stack.manage("kcm_tenant", "create", "initech", "--name", "Initech")
    printed = live_stack.manage(
        "kcm_tenant", "invite", "initech", "--roles", "tenant_admin,auditor",
        "--port", str(live_stack.port),
    ).stdout  # fmt: skip
    found = re.search(r"(http://initech\.localhost:\d+/invitations/[A-Za-z0-9_-]{43}/)", printed)
    assert found, printed
    link = found.group(1)
    base = f"http://initech.localhost:{live_stack.port}"

    page.goto(link)
    expect(page.get_by_role("heading", name="You are invited to Initech")).to_be_visible()
    expect(page.get_by_test_id("invitation-roles")).to_have_text("auditor, tenant_admin")
    page.get_by_label("Choose a username").fill("peter")
    page.get_by_label("Your email").fill("peter@initech.example")
    page.get_by_label("Choose a password").fill(PASSWORD)
    page.get_by_label("Repeat the password").fill(PASSWORD)
    page.get_by_role("button", name="Create account and accept").click()

    expect(page).to_have_url(f"{base}/")
    expect(page.get_by_test_id("tenant-name")).to_have_text("Initech")
    expect(page.get_by_test_id("user-menu")).to_contain_text("peter")
    expect(page.get_by_test_id("user-menu")).to_contain_text("tenant_admin")
    page.get_by_role("link", name="Members").click()
    expect(page.get_by_role("cell", name="peter", exact=True)).to_be_visible()
    # The new admin invites the next member from the members page; the link is shown once.
    page.get_by_test_id("invite-form").get_by_label("Tenant admin").check()
    page.get_by_role("button", name="Create invitation link").click()
    expect(page.get_by_test_id("invitation-link")).to_contain_text(f"{base}/invitations/")

    # The link worked once: opened again, it is dead, saying nothing about why.
    page.goto(link)
    expect(page.get_by_role("alert")).to_contain_text("This invitation link is not valid")
    expect(page.get_by_label("Choose a username")).to_have_count(0)
