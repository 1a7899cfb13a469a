"""Multi-factor sign-in in a real browser (issue 12, acceptance 2): a key admin enrols an
authenticator app (the test computes codes from the otpauth link the page shows), signs out,
signs in with password + code, and a wrong code is refused; in a tenant that requires MFA a
key admin without a factor cannot reach key pages until enrolling; a passkey is registered
and used to sign in with Chromium's virtual authenticator (DevTools protocol WebAuthn domain).

Debian's chromium driven by Playwright (tests/e2e/browser.py). `*.localhost` is a secure
context for Chromium, so WebAuthn works over plain http with RP ID `hooli.localhost`.
"""

from __future__ import annotations

import time
from typing import Any

import pyotp
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from .browser import NEEDS_CHROMIUM
from .stack import LiveStack

pytestmark = [pytest.mark.e2e, pytest.mark.browser, NEEDS_CHROMIUM]

LIVE_STACK = {"web_workers": 1, "celery_pool": None}
PASSWORD = "hooli passphrase for the mfa test 77"
SETUP = f"""
from apps.core.roles import Role
from apps.tenants import services
tenant = services.tenant_create(slug="hooli", name="Hooli")
for name, role in [("gavin", Role.TENANT_ADMIN), ("richard", Role.KEY_ADMIN),
                   ("dinesh", Role.KEY_ADMIN), ("jared", Role.KEY_ADMIN)]:
    user = services.user_create(username=name, password={PASSWORD!r})
    services.membership_set(tenant=tenant, user=user, roles=[role])
"""


@pytest.fixture(scope="module")
def base(live_stack: LiveStack) -> str:
    live_stack.manage("shell", "-c", SETUP)
    return f"http://hooli.localhost:{live_stack.port}"


def sign_in(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def enrol_totp(page: Page, base: str) -> pyotp.TOTP:
    """From the enrolment page: set up an app, confirm with a code from the shown link."""
    page.goto(f"{base}/mfa/")
    page.get_by_role("button", name="Set up an authenticator app").click()
    uri = page.get_by_test_id("totp-uri").get_attribute("href")
    assert uri and uri.startswith("otpauth://totp/")
    totp = pyotp.parse_uri(uri)
    assert isinstance(totp, pyotp.TOTP)
    page.get_by_label("Code").fill(totp.now())
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    expect(page.get_by_test_id("recovery-codes").locator("li")).to_have_count(10)
    page.get_by_role("link", name="Done").click()
    expect(page.get_by_test_id("mfa-device")).to_have_count(1)
    return totp


def test_enrol_totp_sign_out_and_sign_in_with_password_and_code(
    live_stack: LiveStack, base: str, page: Page
) -> None:
    sign_in(page, base, "richard")
    expect(page).to_have_url(f"{base}/")
    totp = enrol_totp(page, base)
    sign_out(page)

    sign_in(page, base, "richard")
    expect(page).to_have_url(f"{base}/mfa/verify/")
    expect(page.get_by_role("heading", name="Second factor")).to_be_visible()
    # Not signed in yet: the key pages still ask for sign-in.
    page.goto(f"{base}/keys/")
    expect(page).to_have_url(f"{base}/login/?next=/keys/")
    page.goto(f"{base}/mfa/verify/")
    right = totp.at(time.time() + 30)  # the enrolment used this step's code: a code works once
    wrong = f"{(int(right) + 500_000) % 1_000_000:06d}"
    page.get_by_label("Code").fill(wrong)
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("alert")).to_contain_text("That code is not right")
    expect(page.get_by_test_id("user-menu")).to_have_count(0)
    page.get_by_label("Code").fill(right)
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(f"{base}/")
    expect(page.get_by_test_id("user-menu")).to_contain_text("richard")
    page.goto(f"{base}/keys/")
    expect(page).to_have_url(f"{base}/keys/")
    # Neither the key nor a code reached the web process's log.
    log = live_stack.log("web")
    for secret in (totp.secret, right, wrong):
        assert secret not in log


def test_a_key_admin_cannot_reach_key_pages_until_enrolling_when_the_tenant_requires_mfa(
    base: str, context: BrowserContext
) -> None:
    admin = context.new_page()
    sign_in(admin, base, "gavin")
    admin.goto(f"{base}/mfa/")
    admin.get_by_test_id("mfa-require-admins").check()
    admin.get_by_role("button", name="Save").click()
    expect(admin.get_by_text("MFA setting saved.")).to_be_visible()
    # The tenant admin is covered too: from now on gavin must enrol before anything else.
    admin.goto(f"{base}/members/")
    expect(admin).to_have_url(f"{base}/mfa/")

    context.clear_cookies()
    page = context.new_page()
    sign_in(page, base, "dinesh")
    expect(page).to_have_url(f"{base}/mfa/")
    expect(page.get_by_test_id("mfa-must-enrol")).to_be_visible()
    for path in ("/keys/", "/", "/approvals/", "/tokens/"):
        page.goto(f"{base}{path}")
        expect(page).to_have_url(f"{base}/mfa/")
    # Hiding links is not the guard: the API refuses the session too.
    answer = page.goto(f"{base}/api/v1/keys/")
    assert answer is not None and answer.status == 403
    assert answer.json()["code"] == "mfa_enrolment_required"
    enrol_totp(page, base)
    page.goto(f"{base}/keys/")
    expect(page).to_have_url(f"{base}/keys/")


def _virtual_authenticator(page: Page, context: BrowserContext) -> Any:
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp


def test_register_a_passkey_and_sign_in_with_it(base: str, context: BrowserContext) -> None:
    page = context.new_page()
    _virtual_authenticator(page, context)
    sign_in(page, base, "jared")
    page.goto(f"{base}/mfa/")
    page.get_by_label("Name").nth(1).fill("laptop")
    page.get_by_role("button", name="Register a passkey").click()
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    page.get_by_role("link", name="Done").click()
    expect(page.get_by_test_id("mfa-device")).to_contain_text("laptop")
    expect(page.get_by_test_id("mfa-device")).to_contain_text("Passkey")
    sign_out(page)

    sign_in(page, base, "jared")
    expect(page).to_have_url(f"{base}/mfa/verify/")
    page.get_by_role("button", name="Use a passkey").click()
    expect(page).to_have_url(f"{base}/")
    expect(page.get_by_test_id("user-menu")).to_contain_text("jared")
