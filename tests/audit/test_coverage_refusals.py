"""Every API endpoint writes exactly one audit event for a denied or failed request
(parametrised over the registered URL patterns)."""

from __future__ import annotations

from typing import Any

import pytest

from apps.core.roles import TENANT_ROLES, Role
from tests.audit.coveragekit import Log, _api_cases, expected_action
from tests.urlmap import Route


def _wrong_role(route: Route, method: str, slug: str) -> str | None:
    view = route.view_class
    allowed = getattr(view, "method_roles", {}).get(method, view.allowed_roles)
    candidates = [Role.PLATFORM_OPERATOR] if slug == "platform" else list(TENANT_ROLES)
    return next((role for role in candidates if role not in allowed), None)


@pytest.mark.parametrize(("slug", "route", "method"), _api_cases())
def test_a_denied_request_writes_one_denied_event(
    world: Any, api: Any, slug: str, route: Route, method: str
) -> None:
    schema = "public" if slug == "platform" else "t_acme"
    role = _wrong_role(route, method, slug)
    if role is None:
        # Every role may call it: an unauthenticated call is the denied one.
        client, role_label = api(slug), "anonymous"
    else:
        client, role_label = api(slug, role), role
    log = Log(schema)
    response = client.call(method, route.path, {} if method != "GET" else None)
    assert response.status_code in (401, 403)
    events = log.new()
    assert [(e.action, e.outcome) for e in events] == [(expected_action(route, method), "denied")]
    assert events[0].error_code == response.json_body["code"]
    if role_label != "anonymous":
        assert events[0].role == role_label


WRITES = [c for c in _api_cases() if c.values[2] in ("POST", "PATCH", "PUT")]


@pytest.mark.parametrize(("slug", "route", "method"), WRITES)
def test_a_failed_write_writes_one_error_event_and_nothing_else(
    world: Any, api: Any, slug: str, route: Route, method: str
) -> None:
    schema = "public" if slug == "platform" else "t_acme"
    view = route.view_class
    allowed = getattr(view, "method_roles", {}).get(method, view.allowed_roles)
    role = next(r for r in sorted(allowed) if (r == Role.PLATFORM_OPERATOR) == (slug == "platform"))
    log = Log(schema)
    response = api(slug, role).call(method, route.path, raw='{"broken": ')
    assert 400 <= response.status_code < 500
    events = log.new()
    assert [(e.action, e.outcome) for e in events] == [(expected_action(route, method), "error")]


@pytest.mark.parametrize(
    ("path", "role", "action", "code"),
    [
        ("/api/v1/tokens/999999/", Role.TENANT_ADMIN, "token.revoke", "token_not_found"),
        ("/api/v1/members/999999/", Role.TENANT_ADMIN, "member.remove", "member_not_found"),
    ],
)
def test_a_failed_delete_writes_one_error_event(
    world: Any, api: Any, path: str, role: str, action: str, code: str
) -> None:
    log = Log("t_acme")
    assert api("acme", role).call("DELETE", path).status_code == 404
    assert [(e.action, e.outcome, e.error_code) for e in log.new()] == [(action, "error", code)]
