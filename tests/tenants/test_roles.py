"""Roles: every role-restricted endpoint refuses each wrong role (deny unless allowed)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.core.roles import TENANT_ROLES, Role
from tests.helpers import assert_problem
from tests.urlmap import PUBLIC, Route, platform_routes, tenant_routes


def _api_cases(routes: list[Route], roles: list[str]) -> list[Any]:
    cases = []
    for route in routes:
        view = route.view_class
        if view is None or route.name in PUBLIC:
            continue
        for method in route.methods:
            allowed = getattr(view, "method_roles", {}).get(method, view.allowed_roles)
            assert allowed, f"{route} admits no role"
            cases += [
                pytest.param(route, method, role, id=f"{role} {method} {route.path}")
                for role in roles
                if role not in allowed
            ]
    return cases


def _console_cases(routes: list[Route], roles: list[str]) -> list[Any]:
    cases = []
    for route in routes:
        allowed = getattr(route.callback, "kcm_roles", None)
        if route.view_class is not None or route.name in PUBLIC:
            continue
        assert allowed, f"console view {route} is not role-checked"
        cases += [
            pytest.param(route, role, id=f"{role} {route.path}")
            for role in roles
            if role not in allowed
        ]
    return cases


@pytest.mark.parametrize(
    ("route", "method", "role"), _api_cases(tenant_routes(), list(TENANT_ROLES))
)
def test_tenant_api_refuses_a_wrong_role(api: Any, route: Route, method: str, role: str) -> None:
    response = api("acme", role).call(method, route.path, {} if method != "GET" else None)
    assert_problem(response, 403, "role_not_allowed")


def test_the_platform_api_admits_only_operators() -> None:
    for route in platform_routes():
        if route.view_class is not None and route.name not in PUBLIC and "platform" in route.path:
            assert set(route.view_class.allowed_roles) == {Role.PLATFORM_OPERATOR}, route


@pytest.mark.parametrize("role", list(TENANT_ROLES))
def test_tenant_tokens_cannot_reach_the_platform_api(api: Any, role: str) -> None:
    response = api("acme", role, on="platform").get("/api/v1/platform/tenants/")
    assert_problem(response, 403, "wrong_tenant")


@pytest.mark.parametrize(("route", "role"), _console_cases(tenant_routes(), list(TENANT_ROLES)))
def test_tenant_console_refuses_a_wrong_role(world: Any, route: Route, role: str) -> None:
    client = Client(HTTP_HOST="acme.localhost")
    client.force_login(world.users[("acme", role)])
    for method in ("GET", "POST"):
        response = client.generic(method, route.path, HTTP_HOST="acme.localhost")
        assert response.status_code == 403, (method, response.status_code)


def test_every_api_view_names_its_roles() -> None:
    for route in tenant_routes() + platform_routes():
        if route.view_class is not None and route.name not in PUBLIC:
            assert getattr(route.view_class, "allowed_roles", None), route


def test_a_view_without_roles_denies_everyone(api: Any, settings: Any) -> None:
    from apps.tenants.api import MeView

    original = MeView.allowed_roles
    MeView.allowed_roles = frozenset()
    try:
        response = api("acme", Role.TENANT_ADMIN).get("/api/v1/me/")
    finally:
        MeView.allowed_roles = original
    assert_problem(response, 403, "forbidden")
