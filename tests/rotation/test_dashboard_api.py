"""GET /api/v1/dashboard/: counts drawn from known traffic, and who may read them."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.audit.models import AuditEvent
from apps.core.roles import Role
from apps.rotation import dashboard
from tests.helpers import assert_problem

URL = "/api/v1/dashboard/"


def _traffic(chain: Any) -> None:
    """7 data keys on payments, 4 on orders (2 single, and a batch of 2 that counts 2),
    2 denied requests and 1 failed one."""
    assert chain.admin.post("/api/v1/service-keys/", {"name": "orders"}).status_code == 201
    for _ in range(7):
        made = chain.user.post("/api/v1/service-keys/payments/generate-data-key/", {})
        assert made.status_code == 200, made.content
    for _ in range(2):
        made = chain.user.post("/api/v1/service-keys/orders/generate-data-key/", {})
        assert made.status_code == 200, made.content
    batch = chain.user.post(
        "/api/v1/service-keys/orders/generate-data-key/batch/", {"items": [{}, {}]}
    )
    assert batch.status_code == 200, batch.content
    for _ in range(2):  # a key admin never uses keys
        assert_problem(
            chain.admin.post("/api/v1/service-keys/payments/generate-data-key/", {}),
            403,
            "role_not_allowed",
        )
    broken = chain.user.post(
        "/api/v1/service-keys/payments/decrypt-data-key/", {"ciphertext": "AAAA"}
    )
    assert broken.status_code == 400, broken.content


def _expected(chain: Any, unit: str, buckets: list[str]) -> dict[str, list[int]]:
    """Counts per bucket, computed here from the events themselves (not by SQL)."""
    starts = [datetime.fromisoformat(b.replace("Z", "+00:00")) for b in buckets]
    counts: dict[str, Counter[int]] = {
        k: Counter() for k in ("payments", "orders", "denied", "error")
    }
    with chain.inside():
        events = AuditEvent.objects.filter(action__in=dashboard.crypto_actions())
        for event in events:
            at = event.occurred_at.astimezone(UTC)
            at = at.replace(second=0, microsecond=0)
            at = at.replace(minute=0) if unit == "hour" else at
            position = starts.index(at)
            if event.outcome == "success":
                name = event.target.removeprefix("service_key:")
                counts[name][position] += event.details.get("items", 1)
            else:
                counts[event.outcome][position] += 1
    return {k: [c[i] for i in range(len(starts))] for k, c in counts.items()}


def test_it_counts_known_traffic_per_service_key_and_bucket(make_chain: Any) -> None:
    chain = make_chain()
    _traffic(chain)
    body = chain.admin.get(URL).json_body
    for name, unit, count in (("day", "hour", 24), ("hour", "minute", 60)):
        window = body["operations"][name]
        assert window["unit"] == unit and len(window["buckets"]) == count
        series = {s["service_key"]: s["counts"] for s in window["series"]}
        assert sorted(series) == ["orders", "payments"]
        assert sum(series["payments"]) == 7 and sum(series["orders"]) == 4
        assert sum(window["denied"]) == 2 and sum(window["error"]) == 1
        expected = _expected(chain, unit, window["buckets"])
        assert series["payments"] == expected["payments"]
        assert series["orders"] == expected["orders"]
        assert (window["denied"], window["error"]) == (expected["denied"], expected["error"])
        assert all(len(s) == count for s in series.values())
    usage = body["gcm_usage"]
    by_key = {v["service_key"]: v for v in usage["versions"]}
    # Usage is reserved in blocks (KCM_USAGE_BLOCK): at least what was used, never over.
    assert by_key["payments"]["used"] >= 7 and by_key["orders"]["used"] >= 4
    assert usage["limit"] > usage["safety_limit"] > 0
    assert by_key["payments"]["primary"] is True


def test_it_shows_recent_events_without_contexts(make_chain: Any) -> None:
    chain = make_chain()
    secret_context = {"record": "do-not-show-this"}
    made = chain.user.post(
        "/api/v1/service-keys/payments/generate-data-key/", {"context": secret_context}
    )
    assert made.status_code == 200
    body = chain.admin.get(URL)
    assert body.status_code == 200
    events = body.json_body["recent_events"]
    assert len(events) <= 10
    assert events[0]["action"] == "datakey.generate"
    assert events[0]["target"] == "service_key:payments" and events[0]["outcome"] == "success"
    assert set(events[0]) == {
        "seq", "occurred_at", "action", "target", "outcome", "error_code", "actor"
    }  # fmt: skip
    assert b"do-not-show-this" not in body.content
    assert [e["seq"] for e in events] == sorted((e["seq"] for e in events), reverse=True)


def test_it_lists_keys_due_and_running_jobs(make_chain: Any) -> None:
    chain = make_chain()
    set_default = chain.admin.call(
        "PUT", "/api/v1/rotation/defaults/", {"level": "L3", "period_days": 3}
    )
    assert set_default.status_code == 200, set_default.content
    started = chain.admin.post(f"/api/v1/rotation/keys/{chain.l2_id}/rotate/", {})
    assert started.status_code == 202
    body = chain.admin.get(URL).json_body
    assert [(d["name"], d["level"], d["when"]) for d in body["rotations_due"]] == [
        ("payments", "L3", "soon")
    ]
    job = started.json_body["job"]
    assert [j["id"] for j in body["running_jobs"]] == [job["id"]]
    assert body["running_jobs"][0]["key_name"] == "tenant key of root"
    with chain.inside():
        later = dashboard.rotations_due(now=datetime.now(UTC) + timedelta(days=4))
    assert [(d["name"], d["when"]) for d in later] == [("payments", "due")]
    assert body["key_managers"] == []


def test_readers_of_the_chain_may_read_it_and_key_users_may_not(make_chain: Any, api: Any) -> None:
    make_chain()
    for role in (Role.KEY_ADMIN, Role.TENANT_ADMIN, Role.AUDITOR):
        assert api("acme", role).get(URL).status_code == 200
    assert_problem(api("acme", Role.KEY_USER).get(URL), 403, "role_not_allowed")
    assert api("acme").get(URL).status_code == 401


def test_another_tenants_traffic_is_invisible(make_chain: Any, api: Any) -> None:
    chain = make_chain()
    _traffic(chain)
    globex = api("globex", Role.AUDITOR).get(URL).json_body
    assert globex["operations"]["day"]["series"] == []
    assert sum(globex["operations"]["day"]["denied"]) == 0
    assert globex["gcm_usage"]["versions"] == []
    assert all(not e["target"].startswith("service_key:") for e in globex["recent_events"])
    assert_problem(api("acme", Role.AUDITOR, on="globex").get(URL), 403, "wrong_tenant")


def test_it_is_documented_in_the_openapi_schema(make_chain: Any) -> None:
    chain = make_chain()
    schema = chain.admin.get("/api/schema/?format=json").json_body
    operation = schema["paths"]["/api/v1/dashboard/"]["get"]
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    body = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"operations", "rotations_due", "gcm_usage", "key_managers"} <= set(body["properties"])
    assert {"running_jobs", "recent_events"} <= set(body["properties"])


def _queries_for_dashboard(chain: Any) -> int:
    dashboard.settled_buckets.reset()  # as a process that shows this tenant for the first time
    with CaptureQueriesContext(connection) as queries:
        assert chain.admin.get(URL).status_code == 200
    return len(queries)


def test_its_query_count_does_not_grow_with_keys_or_traffic(make_chain: Any) -> None:
    """One GROUP BY per window, one query per table read: 40 service keys with traffic cost as
    many queries as one key with one data key."""
    counts = []
    for slug, keys, used in (("acme", 1, 1), ("globex", 40, 20)):
        chain = make_chain(slug, service_keys=keys)
        for name in chain.names[:used]:
            path = f"/api/v1/service-keys/{name}/generate-data-key/"
            assert chain.user.post(path, {}).status_code == 200
        rotate = f"/api/v1/rotation/keys/{chain.l2_id}/rotate/"
        assert chain.admin.post(rotate, {}).status_code == 202
        counts.append(_queries_for_dashboard(chain))
    assert counts[0] == counts[1] and counts[0] <= 20, counts


def test_the_console_page_loads_the_charts_for_readers_only(make_chain: Any, world: Any) -> None:
    make_chain()
    for role, charts in ((Role.AUDITOR, True), (Role.TENANT_ADMIN, True), (Role.KEY_USER, False)):
        client = Client(HTTP_HOST="acme.localhost")
        client.force_login(world.users[("acme", role)])
        page = client.get("/")
        assert page.status_code == 200
        html = page.content.decode()
        assert ('data-url="/api/v1/dashboard/"' in html) is charts, role
        assert ("/static/charts.js" in html and "/static/dashboard.js" in html) is charts, role
        # Nothing inline: every script comes from our static files (the CSP allows no other).
        assert "<script>" not in html and "style=" not in html
        if charts:  # the page's own fetch, with the session, is allowed
            assert client.get(URL).status_code == 200


def test_it_charts_the_ten_busiest_keys_and_sums_the_others(make_chain: Any) -> None:
    chain = make_chain(service_keys=12)
    for name in ["payments", "payments", *chain.names]:
        made = chain.user.post(f"/api/v1/service-keys/{name}/generate-data-key/", {})
        assert made.status_code == 200, made.content
    window = chain.admin.get(URL).json_body["operations"]["day"]
    quiet = sorted(chain.names[1:])  # one data key each; ties go by name
    assert [s["service_key"] for s in window["series"]] == sorted(["payments", *quiet[:9]])
    assert {s["service_key"]: sum(s["counts"]) for s in window["series"]}["payments"] == 3
    assert window["other"]["service_keys"] == 2 and sum(window["other"]["counts"]) == 2


def test_settled_buckets_are_read_once_and_again_when_the_log_changes(make_chain: Any) -> None:
    """Buckets older than SETTLE are kept per process: the next refresh reads only what is
    newer. Seen from two hours on, today's traffic is settled."""
    chain = make_chain()
    later = datetime.now(UTC) + timedelta(hours=2)
    path = "/api/v1/service-keys/payments/generate-data-key/"
    try:
        dashboard.settled_buckets.reset()
        assert chain.user.post(path, {}).status_code == 200
        with chain.inside():
            first = dashboard.dashboard(now=later)["operations"]["day"]
            with CaptureQueriesContext(connection) as queries:
                again = dashboard.dashboard(now=later)["operations"]["day"]
        assert again["series"] == first["series"]
        assert sum(first["series"][0]["counts"]) == 1
        day_query = [q["sql"] for q in queries if "date_trunc('hour'" in q["sql"]]
        boundary = (later - dashboard.SETTLE).replace(minute=0, second=0, microsecond=0)
        # Only from the first bucket that is not settled (not 23 hours before it).
        assert len(day_query) == 1
        assert f"occurred_at >= '{boundary:%Y-%m-%d %H:%M:%S}+00:00'" in day_query[0]
        # New events before the boundary (the log changed): everything is read again.
        assert chain.user.post(path, {}).status_code == 200
        with chain.inside():
            changed = dashboard.dashboard(now=later)["operations"]["day"]
        assert sum(changed["series"][0]["counts"]) == 2
    finally:
        dashboard.settled_buckets.reset()
