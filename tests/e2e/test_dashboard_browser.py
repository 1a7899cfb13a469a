"""An auditor opens the console's dashboard in a real browser after known traffic and sees it
drawn: the chart's points carry the counts of GET /api/v1/dashboard/, the GCM usage bars and
the recent events are there, and the browser reports no Content-Security-Policy violation
(charts.js and dashboard.js are our static files; nothing inline, nothing from elsewhere)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from .browser import NEEDS_CHROMIUM
from .stack import LiveStack
from .tenantkit import KEY_ADMIN, KEY_USER, Tenant, call, create_chain, provision_tenant

pytestmark = [pytest.mark.e2e, pytest.mark.browser, NEEDS_CHROMIUM]

LIVE_STACK = {"web_workers": 1, "celery_pool": None}
PASSWORD = "charts for auditors 42"
TRAFFIC = {"payments": 5, "orders": 3}
DENIED = 2


_AUDITOR_USER = """
from apps.tenants import services
from apps.tenants.models import Tenant
user = services.user_create(username="watcher", password={password!r})
services.membership_set(tenant=Tenant.objects.get(slug="dash"), user=user, roles=["auditor"])
"""


@pytest.fixture(scope="module")
def tenant(live_stack: LiveStack) -> Tenant:
    tenant = provision_tenant(live_stack, "dash", (KEY_ADMIN, KEY_USER))
    create_chain(live_stack, tenant, services=tuple(TRAFFIC))
    for name, count in TRAFFIC.items():
        for _ in range(count):
            path = f"/api/v1/service-keys/{name}/generate-data-key/"
            assert call(live_stack, tenant, KEY_USER, "POST", path, {}).status == 200
    for _ in range(DENIED):  # key admins never use keys: refused, and audited as denied
        path = "/api/v1/service-keys/payments/generate-data-key/"
        assert call(live_stack, tenant, KEY_ADMIN, "POST", path, {}).status == 403
    live_stack.manage("shell", "-c", _AUDITOR_USER.format(password=PASSWORD))
    return tenant


def _points(page: Page, selector: str) -> dict[str, list[int]]:
    values: dict[str, list[int]] = page.eval_on_selector_all(
        selector,
        """nodes => nodes.reduce((acc, n) => {
             const s = n.getAttribute('data-series');
             (acc[s] = acc[s] || []).push(Number(n.getAttribute('data-value')));
             return acc; }, {})""",
    )
    return values


def test_the_dashboard_draws_the_traffic_without_csp_violations(
    live_stack: LiveStack, tenant: Tenant, page: Page
) -> None:
    messages: list[str] = []
    page.on("console", lambda message: messages.append(f"{message.type}: {message.text}"))
    failed: list[str] = []
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    base = f"http://{tenant.host}:{live_stack.port}"
    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill("watcher")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.get_by_test_id("dashboard")).to_have_attribute("data-loaded", "true")

    # The line chart: one series per service key, 24 hourly points each, summing to the traffic.
    chart = page.get_by_test_id("ops-chart")
    expect(chart.locator("svg polyline.series")).to_have_count(len(TRAFFIC))
    drawn = _points(page, '[data-testid="ops-chart"] circle.point')
    assert {name: len(values) for name, values in drawn.items()} == {n: 24 for n in TRAFFIC}
    assert {name: sum(values) for name, values in drawn.items()} == TRAFFIC
    expect(page.get_by_test_id("ops-total")).to_have_text(str(sum(TRAFFIC.values())))
    refused = _points(page, '[data-testid="refused-chart"] rect.bar')
    assert sum(refused["denied"]) == DENIED and sum(refused["error"]) == 0

    # Per minute, the same traffic, 60 points per key.
    page.get_by_role("button", name="Last hour, per minute").click()
    drawn = _points(page, '[data-testid="ops-chart"] circle.point')
    assert {name: len(values) for name, values in drawn.items()} == {n: 60 for n in TRAFFIC}
    assert {name: sum(values) for name, values in drawn.items()} == TRAFFIC

    # The chart shows what the API says.
    status, _, body = live_stack.request(
        "GET",
        "/api/v1/dashboard/",
        host=tenant.host,
        headers={"Authorization": f"Bearer {tenant.tokens[KEY_ADMIN]}"},
    )
    assert status == 200, body
    api: dict[str, Any] = json.loads(body)
    assert {s["service_key"]: s["counts"] for s in api["operations"]["hour"]["series"]} == drawn

    usage = _points(page, '[data-testid="usage-chart"] rect.gauge')
    assert set(usage) == {"payments v1 (primary)", "orders v1 (primary)"}
    events = page.get_by_test_id("event-rows").locator("tr")
    expect(events).to_have_count(10)
    expect(page.get_by_test_id("event-rows")).to_contain_text("role_not_allowed")
    expect(page.get_by_test_id("job-rows")).to_contain_text("No rewrap job is running.")

    violations = [m for m in messages if "Content Security Policy" in m or "Refused" in m]
    assert violations == [], violations
    # The only failed load is the browser's own favicon request (KCM serves none).
    assert [url for url in failed if not url.endswith("/favicon.ico")] == [], failed
    errors = [m for m in messages if m.startswith("error") and "404" not in m]
    assert errors == [], messages
