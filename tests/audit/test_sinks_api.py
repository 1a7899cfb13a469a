"""The audit sinks API: tenant admins configure sinks, auditors see them; a webhook's secret
is write-only (never in an answer, a log or an audit record); sinks are the tenant's own."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings
from django_tenants.utils import schema_context

from apps.audit.models import AuditEvent, AuditSink
from apps.audit.sealer import seal_here
from apps.core.roles import Role
from tests.audit.sinkkit import SECRET
from tests.helpers import assert_problem

URL = "/api/v1/audit/sinks/"
WEBHOOK = {"kind": "webhook", "url": "https://siem.example.com/kcm?token=abc", "secret": SECRET}


def test_an_admin_creates_lists_and_deletes_a_webhook_sink_and_never_sees_its_secret(
    world: Any, api: Any
) -> None:
    admin = api("acme", Role.TENANT_ADMIN)
    created = admin.post(URL, WEBHOOK)
    assert created.status_code == 201
    listed = api("acme", Role.AUDITOR).get(URL)
    detail = admin.get(f"{URL}{created.json_body['id']}/")
    for response in (created, listed, detail):
        assert SECRET not in response.content.decode() and "secret" not in response.json_body
    assert detail.json_body["destination"] == "https://siem.example.com/kcm"  # no query token
    with schema_context("t_acme"):
        sink = AuditSink.objects.get(pk=created.json_body["id"])
        assert SECRET.encode() not in bytes(sink.secret_sealed or b"")
        seal_here()
        events = list(AuditEvent.objects.filter(action__startswith="audit.sink."))
    assert [e.action for e in events] == ["audit.sink.create"]
    assert SECRET not in repr(events[0].__dict__) and "token=abc" not in repr(events[0].__dict__)
    assert admin.call("DELETE", f"{URL}{sink.pk}/").status_code == 204
    assert admin.get(f"{URL}{sink.pk}/").status_code == 404


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"kind": "webhook", "url": "http://siem.example.com/", "secret": SECRET}, "https"),
        ({"kind": "webhook", "url": "https://u:p@siem.example.com/", "secret": SECRET}, "creden"),
        ({"kind": "webhook", "url": "https://siem.example.com/"}, "secret"),
        ({"kind": "syslog", "host": "siem.example.com"}, "port"),
        ({"kind": "syslog", "host": "h", "port": 6514, "tls": True, "ca_pem": "junk"}, "PEM"),
        ({"kind": "syslog", "host": "h", "port": 514, "ca_pem": "x"}, ""),
    ],
)
def test_a_bad_sink_is_refused_with_a_stable_code(
    world: Any, api: Any, body: dict[str, Any], fragment: str
) -> None:
    response = api("acme", Role.TENANT_ADMIN).post(URL, body)
    assert response.status_code == 400
    assert response.json_body["code"] in ("invalid_sink", "validation_error")
    assert fragment in response.json_body["detail"] or response.json_body.get("errors")


@override_settings(KCM_ENV="production")
def test_plain_http_to_localhost_is_refused_in_production(world: Any, api: Any) -> None:
    body = {"kind": "webhook", "url": "http://127.0.0.1:8080/", "secret": SECRET}
    assert_problem(api("acme", Role.TENANT_ADMIN).post(URL, body), 400, "invalid_sink")


def test_it_refuses_a_foreign_tenants_sink(world: Any, api: Any) -> None:
    sink = api("acme", Role.TENANT_ADMIN).post(URL, WEBHOOK).json_body
    globex = api("globex", Role.TENANT_ADMIN)
    assert_problem(globex.get(f"{URL}{sink['id']}/"), 404, "audit_sink_not_found")
    assert_problem(globex.call("DELETE", f"{URL}{sink['id']}/"), 404, "audit_sink_not_found")
    assert globex.get(URL).json_body["results"] == []
    # An acme token on globex's host is refused outright.
    assert api("acme", Role.TENANT_ADMIN, on="globex").get(URL).status_code == 403


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.KEY_ADMIN, Role.KEY_USER])
def test_only_a_tenant_admin_may_create_or_delete_a_sink(world: Any, api: Any, role: str) -> None:
    sink = api("acme", Role.TENANT_ADMIN).post(URL, WEBHOOK).json_body
    assert_problem(api("acme", role).post(URL, WEBHOOK), 403, "role_not_allowed")
    assert_problem(api("acme", role).call("DELETE", f"{URL}{sink['id']}/"), 403, "role_not_allowed")
