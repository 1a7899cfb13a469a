"""A key admin in a real browser rotates a tenant key from the console and watches the job's
progress bar advance, batch by batch, to completion (Debian's chromium through Playwright;
the bar polls the job's JSON with the console session, no page reload)."""

from __future__ import annotations

import os
import re
import time

import pytest
from playwright.sync_api import Page, expect

from .browser import NEEDS_CHROMIUM
from .rotationkit import in_stack
from .stack import LiveStack
from .tenantkit import KEY_ADMIN, create_chain, provision_tenant

pytestmark = [pytest.mark.e2e, pytest.mark.browser, NEEDS_CHROMIUM]

SERVICE_KEYS = 1500
# 30 batches with a pause after each: 12 s or more of progress, for a page that polls once a
# second to show at least three steps even when the page is slow to load on a busy machine.
LIVE_STACK = {
    "web_workers": 2,
    "celery_pool": "solo",
    "env": {**os.environ, "KCM_REWRAP_BATCH_SIZE": "50", "KCM_REWRAP_BATCH_PAUSE_MS": "400"},
}
PASSWORD = "rotate me, watch me 42"


_KEY_ADMIN_USER = """
from apps.tenants import services
from apps.tenants.models import Tenant
user = services.user_create(username="keys", password={password!r})
services.membership_set(tenant=Tenant.objects.get(slug="bars"), user=user, roles=["key_admin"])
"""


@pytest.fixture(scope="module")
def tenant_host(live_stack: LiveStack) -> str:
    tenant = provision_tenant(live_stack, "bars", (KEY_ADMIN,))
    create_chain(live_stack, tenant)
    in_stack(live_stack, tenant.schema, "bulk_service_keys", SERVICE_KEYS - 1)
    live_stack.manage("shell", "-c", _KEY_ADMIN_USER.format(password=PASSWORD))
    return f"http://{tenant.host}:{live_stack.port}"


def test_the_progress_bar_advances_to_completion(tenant_host: str, page: Page) -> None:
    page.goto(f"{tenant_host}/login/")
    page.get_by_label("Username").fill("keys")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()

    page.get_by_role("link", name="Rotation").click()
    expect(page.get_by_role("heading", name="Rotation", exact=True)).to_be_visible()
    page.get_by_role("button", name="Rotate L2 of root").click()

    expect(page).to_have_url(re.compile(r"/rotation/jobs/[0-9a-f-]{36}/$"))
    expect(page.get_by_role("heading", name="Rotation of tenant key of root")).to_be_visible()
    bar = page.get_by_role("progressbar", name="Rewrap progress")
    state = page.get_by_test_id("job-state")
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        current = (state.inner_text(), int(bar.get_attribute("aria-valuenow") or 0))
        if not seen or seen[-1] != current:
            seen.append(current)
        if current[0] not in ("queued", "running"):
            break
        time.sleep(0.05)
    percents = [percent for _, percent in seen]
    assert seen[-1] == ("succeeded", 100), seen
    assert percents == sorted(percents), seen  # it only moves forward
    # The bar showed the job under way, several steps between empty and full.
    assert len({p for p in percents if 0 < p < 100}) >= 3, seen
    expect(page.get_by_test_id("job-done")).to_have_text(str(SERVICE_KEYS))
    expect(page.get_by_test_id("job-failed")).to_have_text("0")
    assert "width: 100%" in (bar.locator(".progress-bar").get_attribute("style") or "")
    # The job is over: cancelling no longer offered.
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
