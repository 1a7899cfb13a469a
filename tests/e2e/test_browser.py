"""A tenant admin in a real browser: sign in, see the dashboard, create an API token, and the
token works against the API.

Debian's chromium driven by Playwright (its own browser download does not work here); the
`*.localhost` tenant hosts are mapped to loopback for the browser.
"""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, expect

from .browser import NEEDS_CHROMIUM
from .stack import LiveStack

pytestmark = [pytest.mark.e2e, pytest.mark.browser, NEEDS_CHROMIUM]

LIVE_STACK = {"web_workers": 1, "celery_pool": None}


@pytest.fixture(scope="module")
def demo_password(live_stack: LiveStack) -> str:
    """kcm_demo creates tenant 'demo' with tenant admin 'admin'; the password is shown once."""
    output = live_stack.manage("kcm_demo").stdout
    found = re.search(r"user: admin\s+password: (\S+)", output)
    assert found, output
    return found.group(1)


def test_tenant_admin_signs_in_creates_a_token_and_the_api_accepts_it(
    live_stack: LiveStack, demo_password: str, page: Page
) -> None:
    base = f"http://demo.localhost:{live_stack.port}"
    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(demo_password)
    page.get_by_role("button", name="Sign in").click()

    expect(page).to_have_url(f"{base}/")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.get_by_test_id("tenant-name")).to_have_text("Demo")
    expect(page.get_by_test_id("user-menu")).to_contain_text("admin")
    expect(page.get_by_test_id("user-menu")).to_contain_text("tenant_admin")

    page.get_by_role("link", name="API tokens").click()
    expect(page).to_have_url(f"{base}/tokens/")
    page.get_by_label("Name").fill("deploy bot")
    page.get_by_label("Role").select_option("key_user")
    page.get_by_role("button", name="Create token").click()
    new_token = page.get_by_test_id("new-token")
    expect(new_token).to_be_visible()
    token = new_token.inner_text().strip()
    assert re.fullmatch(r"kcm_[0-9a-f]+_\S+", token), token
    # Shown once: reloading the page does not show it again.
    page.goto(f"{base}/tokens/")
    expect(page.get_by_test_id("new-token")).to_have_count(0)
    expect(page.get_by_role("cell", name="deploy bot")).to_be_visible()

    status, _, body = live_stack.request(
        "GET", "/api/v1/me/", host="demo.localhost", headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 200, body
    assert json.loads(body) == {
        "kind": "token",
        "label": token.split("_")[1],
        "role": "key_user",
        "roles": ["key_user"],
        "key_grant": {"service_keys": ["*"], "context": {}},
        "tenant": "demo",
    }
    # The token belongs to demo only: the platform host refuses it.
    status, _, body = live_stack.request(
        "GET", "/api/v1/me/", host="localhost", headers={"Authorization": f"Bearer {token}"}
    )
    assert (status, json.loads(body)["code"]) == (403, "wrong_tenant")


def test_the_console_and_the_api_docs_run_under_the_csp(
    live_stack: LiveStack, demo_password: str, page: Page
) -> None:
    """The Content-Security-Policy allows no inline code: what the browser refuses shows up as
    console errors, and the Swagger UI (served from our static files) must still render."""
    refused: list[str] = []
    page.on(
        "console",
        lambda message: (
            refused.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    base = f"http://demo.localhost:{live_stack.port}"
    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(demo_password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}/")
    for path in ("/keys/", "/rotation/", "/members/", "/audit/"):
        page.goto(f"{base}{path}")
    page.goto(f"{base}/api/docs/")
    expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
    assert refused == []
