"""Single sign-on in a real browser against a real OpenID Connect provider (issue 12,
acceptance 1): panva's oidc-provider from the npm registry (tests/e2e/oidc/, installed here with
`npm ci` from its committed lock file) runs as its own process; KCM runs as in production
(tests/e2e/stack.py). A person signs in through the provider and gets the mapped role; a person
of a disallowed email domain, or whose groups map to no role, is refused with a clear page.

The provider is at 127.0.0.1 and the tenant at *.localhost: another site, so the callback is a
cross-site navigation as in production (the Strict session cookie must still be set).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from .browser import NEEDS_CHROMIUM
from .stack import LiveStack, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.browser, NEEDS_CHROMIUM]

LIVE_STACK = {"web_workers": 1, "celery_pool": None}
OIDC_DIR = Path(__file__).resolve().parent / "oidc"
CLIENT_ID = "kcm-e2e"
CLIENT_SECRET = "e2e-client-secret-7f3a9c1d2b"
SLUG = "ssocorp"


_CONFIGURE = """
from django_tenants.utils import tenant_context
from apps.sso.services import provider_set
from apps.tenants import services
tenant = services.tenant_create(slug={slug!r}, name="SSO Corp")
with tenant_context(tenant):
    provider_set(
        tenant=tenant, name="Corp IdP", issuer={issuer!r}, client_id={client_id!r},
        client_secret={secret!r}, role_claim="groups",
        role_map={{"kcm-keys": ["key_admin"], "kcm-admins": ["tenant_admin"]}},
        allowed_domains=["example.com"], local_passwords=False,
    )
print("configured")
"""


def _npm_ci() -> None:
    """Install the provider from the committed lock file; fail loudly (never skip) without
    node and npm: tools/install-system-deps requires them."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are required (tools/install-system-deps installs them)")
    if not (OIDC_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=OIDC_DIR, check=True, timeout=600
        )


@pytest.fixture(scope="module")
def issuer(live_stack: LiveStack) -> Iterator[str]:
    _npm_ci()
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    assert live_stack.tmp is not None
    log_path = live_stack.tmp / "oidc-provider.log"
    log = open(log_path, "w")  # noqa: SIM115
    process = subprocess.Popen(
        [shutil.which("node") or "node", "server.mjs"],
        cwd=OIDC_DIR,
        env={
            **os.environ,
            "PORT": str(port),
            "CLIENT_ID": CLIENT_ID,
            "CLIENT_SECRET": CLIENT_SECRET,
            "REDIRECT_URI": f"http://{SLUG}.localhost:{live_stack.port}/sso/callback/",
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration") as r:
                    assert json.load(r)["issuer"] == issuer
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    raise AssertionError(
                        "oidc-provider did not start:\n" + log_path.read_text()
                    ) from None
                time.sleep(0.2)
        printed = live_stack.manage(
            "shell",
            "-c",
            _CONFIGURE.format(slug=SLUG, issuer=issuer, client_id=CLIENT_ID, secret=CLIENT_SECRET),
        ).stdout
        assert "configured" in printed, printed
        yield issuer
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    """A fresh browser profile (conftest's `context`): no session at either site."""
    # The provider's development pages import a web font: nothing leaves this machine.
    context.route("**/fonts.googleapis.com/**", lambda route: route.abort())
    return context.new_page()


def _sign_in_at_provider(page: Page, base: str, login: str) -> None:
    page.goto(f"{base}/login/?next=/keys/")
    # Local passwords are off for this tenant: only the provider's button is offered.
    expect(page.get_by_label("Password")).to_have_count(0)
    page.get_by_role("button", name="Sign in with Corp IdP").click()
    # The provider's own sign-in and consent pages.
    page.locator("input[name=login]").fill(login)
    page.locator("input[name=password]").fill("any password at this provider")
    page.locator("button[type=submit]").click()
    page.get_by_role("button", name="Continue").click()


def test_a_person_signs_in_through_the_provider_and_gets_the_mapped_role(
    live_stack: LiveStack, issuer: str, page: Page
) -> None:
    base = f"http://{SLUG}.localhost:{live_stack.port}"
    _sign_in_at_provider(page, base, "alice")
    expect(page).to_have_url(f"{base}/keys/")
    expect(page.get_by_test_id("user-menu")).to_contain_text("alice@example.com")
    expect(page.get_by_test_id("user-menu")).to_contain_text("key_admin")
    # The mapped role is key_admin, not tenant_admin: members are refused.
    page.goto(f"{base}/members/")
    expect(page.get_by_role("heading", name="Forbidden")).to_be_visible()


def test_an_admin_of_the_provider_becomes_tenant_admin(
    live_stack: LiveStack, issuer: str, page: Page
) -> None:
    base = f"http://{SLUG}.localhost:{live_stack.port}"
    _sign_in_at_provider(page, base, "carol")
    expect(page).to_have_url(f"{base}/keys/")
    page.goto(f"{base}/members/")
    expect(page.get_by_role("cell", name="carol@example.com", exact=True).first).to_be_visible()
    expect(page.get_by_role("cell", name="alice@example.com", exact=True).first).to_be_visible()
    page.goto(f"{base}/sso/")
    expect(page.get_by_test_id("sso-secret-state")).to_have_text("stored")
    assert CLIENT_SECRET not in page.content()


def test_a_disallowed_email_domain_is_refused(
    live_stack: LiveStack, issuer: str, page: Page
) -> None:
    base = f"http://{SLUG}.localhost:{live_stack.port}"
    _sign_in_at_provider(page, base, "mallory")
    expect(page.get_by_test_id("sso-refused")).to_contain_text("email domain is not allowed")
    expect(page.get_by_test_id("sso-refused-code")).to_have_text("domain_not_allowed")
    page.goto(f"{base}/keys/")
    expect(page).to_have_url(f"{base}/login/?next=/keys/")


def test_a_person_whose_groups_map_to_no_role_is_refused(
    live_stack: LiveStack, issuer: str, page: Page
) -> None:
    base = f"http://{SLUG}.localhost:{live_stack.port}"
    _sign_in_at_provider(page, base, "nobody")
    expect(page.get_by_test_id("sso-refused-code")).to_have_text("no_mapped_role")
