"""Tenant isolation: credentials of tenant A get 403/404 on every URL of tenant B."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.core.roles import Role
from tests.urlmap import PUBLIC, Route, platform_routes, tenant_routes

TENANT_ROUTES = [r for r in tenant_routes() if r.name not in PUBLIC]
PLATFORM_ROUTES = [r for r in platform_routes() if r.name not in PUBLIC]


def _cases(routes: list[Route]) -> list[Any]:
    return [
        pytest.param(route, method, id=f"{method} {route.path}")
        for route in routes
        for method in route.methods
    ]


@pytest.mark.parametrize(("route", "method"), _cases(TENANT_ROUTES))
@pytest.mark.parametrize("role", [Role.TENANT_ADMIN, Role.KEY_ADMIN, Role.KEY_USER, Role.AUDITOR])
def test_a_token_of_another_tenant_is_refused(
    api: Any, route: Route, method: str, role: str
) -> None:
    response = api("acme", role, on="globex").call(
        method, route.path, {} if method != "GET" else None
    )
    assert response.status_code in (403, 404), (response.status_code, response.content[:300])


@pytest.mark.parametrize(("route", "method"), _cases(TENANT_ROUTES))
def test_a_session_of_another_tenant_is_refused(world: Any, route: Route, method: str) -> None:
    client = Client(HTTP_HOST="globex.localhost", enforce_csrf_checks=False)
    client.force_login(world.users[("acme", Role.TENANT_ADMIN)])
    response = client.generic(method, route.path, HTTP_HOST="globex.localhost")
    assert response.status_code in (403, 404), (response.status_code, response.content[:300])


@pytest.mark.parametrize(("route", "method"), _cases(PLATFORM_ROUTES))
def test_tenant_credentials_get_nothing_on_the_platform(
    world: Any, api: Any, route: Route, method: str
) -> None:
    response = api("acme", Role.TENANT_ADMIN, on="platform").call(
        method, route.path, {} if method != "GET" else None
    )
    assert response.status_code in (403, 404), (response.status_code, response.content[:300])
    client = Client(HTTP_HOST="localhost")
    client.force_login(world.users[("acme", Role.TENANT_ADMIN)])
    response = client.generic(method, route.path, HTTP_HOST="localhost")
    assert response.status_code in (403, 404), (response.status_code, response.content[:300])


@pytest.mark.parametrize(("route", "method"), _cases(TENANT_ROUTES))
def test_anonymous_requests_are_refused_or_sent_to_sign_in(
    api: Any, route: Route, method: str
) -> None:
    response = api("acme").call(method, route.path, {} if method != "GET" else None)
    if route.path.startswith("/api/"):
        assert response.status_code == 401
        assert response.json_body["code"] == "not_authenticated"
    else:
        assert response.status_code in (302, 403)
        if response.status_code == 302:
            assert response["Location"].startswith("/login/")


def test_the_api_data_of_one_tenant_is_not_visible_in_another(api: Any) -> None:
    created = api("acme", Role.TENANT_ADMIN).post(
        "/api/v1/tokens/", {"name": "acme-only", "role": "tenant_admin"}
    )
    assert created.status_code == 201
    listed = api("globex", Role.TENANT_ADMIN).get("/api/v1/tokens/")
    assert listed.status_code == 200
    assert "acme-only" not in {t["name"] for t in listed.json_body["results"]}
