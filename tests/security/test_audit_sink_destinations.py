"""An audit sink makes KCM open connections where a tenant admin says. Without a limit, a
tenant could make the platform probe its own network (a refused port and a silent one fail
differently in `last_error`) or POST signed JSON to internal services. In production no host
is allowed until the operator lists it in KCM_AUDIT_SINK_ALLOWED_HOSTS; narrowing the list
later stops existing sinks too."""

from __future__ import annotations

from typing import Any

from django.test import override_settings
from django_tenants.utils import schema_context

from apps.audit.models import AuditSink
from apps.audit.streaming import sink_deliver
from apps.core.roles import Role
from tests.audit.sinkkit import SECRET, WebhookReceiver
from tests.helpers import assert_problem

URL = "/api/v1/audit/sinks/"


@override_settings(KCM_AUDIT_SINK_ALLOWED_HOSTS=[])
def test_no_sink_host_is_allowed_until_the_operator_lists_it(world: Any, api: Any) -> None:
    admin = api("acme", Role.TENANT_ADMIN)
    internal = [
        {"kind": "webhook", "url": "https://10.0.0.5/hook", "secret": SECRET},
        {"kind": "webhook", "url": "https://169.254.169.254/latest", "secret": SECRET},
        {"kind": "syslog", "host": "127.0.0.1", "port": 5432},
    ]
    for body in internal:
        assert_problem(admin.post(URL, body), 400, "sink_host_not_allowed")
    with schema_context("t_acme"):
        assert not AuditSink.objects.exists()


@override_settings(KCM_AUDIT_SINK_ALLOWED_HOSTS=["*.siem.example.com"])
def test_a_listed_host_pattern_is_allowed_and_others_are_not(world: Any, api: Any) -> None:
    admin = api("acme", Role.TENANT_ADMIN)
    ok = {"kind": "webhook", "url": "https://eu.siem.example.com/kcm", "secret": SECRET}
    assert admin.post(URL, ok).status_code == 201
    other = {"kind": "webhook", "url": "https://evil.example.com/", "secret": SECRET}
    assert_problem(admin.post(URL, other), 400, "sink_host_not_allowed")


def test_a_sink_whose_host_is_no_longer_allowed_is_not_delivered(world: Any, api: Any) -> None:
    webhook = WebhookReceiver()
    try:
        body = {"kind": "webhook", "url": webhook.url, "secret": SECRET}
        sink = api("acme", Role.TENANT_ADMIN).post(URL, body).json_body
        narrowed = override_settings(KCM_AUDIT_SINK_ALLOWED_HOSTS=["*.siem.example.com"])
        with narrowed, schema_context("t_acme"):
            assert sink_deliver(sink["id"], tenant="acme") == "failed"
            assert "no longer allows" in AuditSink.objects.get(pk=sink["id"]).last_error
        assert webhook.requests == []
    finally:
        webhook.close()
