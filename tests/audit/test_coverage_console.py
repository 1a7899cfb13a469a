"""Console sign-in, sign-out, their failures and console actions write the same audit events
as the API."""

from __future__ import annotations

from typing import Any

from django.test import Client

from apps.core.roles import Role
from tests.audit.coveragekit import Log
from tests.conftest import PASSWORD


def test_console_sign_in_out_and_failures_are_audited(world: Any) -> None:
    log = Log("t_acme")
    client = Client()
    client.post(
        "/login/", {"username": "acme-auditor", "password": "wrong"}, HTTP_HOST="acme.localhost"
    )
    client.post(
        "/login/", {"username": "globex-auditor", "password": PASSWORD}, HTTP_HOST="acme.localhost"
    )
    client.post(
        "/login/", {"username": "acme-auditor", "password": PASSWORD}, HTTP_HOST="acme.localhost"
    )
    client.get("/members/", HTTP_HOST="acme.localhost")  # an auditor may not
    client.post("/logout/", HTTP_HOST="acme.localhost")
    assert [(e.action, e.outcome, e.error_code) for e in log.new()] == [
        ("auth.login_failed", "denied", "invalid_credentials"),
        ("auth.login_failed", "denied", "not_a_member"),
        ("auth.login", "success", ""),
        ("console.request", "denied", "role_not_allowed"),
        ("auth.logout", "success", ""),
    ]
    assert log.new()[2].actor == "user:acme-auditor"


def test_console_actions_write_the_same_events_as_the_api(world: Any) -> None:
    client = Client()
    client.force_login(world.users[("acme", Role.KEY_ADMIN)])
    log = Log("t_acme")
    client.post("/keys/customer-keys/new/", {"name": "root"}, HTTP_HOST="acme.localhost")
    client.post("/keys/service-keys/new/", {"name": "payments"}, HTTP_HOST="acme.localhost")
    client.post(
        "/keys/service-keys/new/", {"name": "payments"}, HTTP_HOST="acme.localhost"
    )  # exists: fails
    assert [(e.action, e.outcome, e.error_code) for e in log.new()] == [
        ("key.create", "success", ""),
        ("key.create", "success", ""),
        ("key.create", "error", "key_exists"),
    ]
    assert all(e.actor == "user:acme-key_admin" for e in log.new())
