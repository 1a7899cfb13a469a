"""Bad input on every endpoint that takes a body: a 4xx problem+json, never a 500, no change."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from apps.core.roles import TENANT_ROLES
from apps.tenants.models import ApiToken, Membership, Tenant
from tests.helpers import Api, assert_problem, host_of
from tests.urlmap import PUBLIC, Route, platform_routes, tenant_routes

WRITE_METHODS = ("POST", "PATCH", "PUT")


def _cases() -> list[Any]:
    cases = []
    for slug, routes in (("acme", tenant_routes()), ("platform", platform_routes())):
        for route in routes:
            if route.view_class is None or route.name in PUBLIC:
                continue
            for method in route.methods:
                if method in WRITE_METHODS:
                    allowed = getattr(route.view_class, "method_roles", {}).get(
                        method, route.view_class.allowed_roles
                    )
                    roles = sorted(
                        r for r in allowed if (r == "platform_operator") == (slug == "platform")
                    )
                    cases.append(
                        pytest.param(
                            slug, route, method, roles[0], id=f"{slug} {method} {route.path}"
                        )
                    )
    return cases


def _fingerprint() -> tuple[int, ...]:
    with connection.cursor() as cursor:
        counts = []
        for table in ("keychain_customerkey", "keychain_servicekey", "keychain_servicekeyversion"):
            cursor.execute(f"SELECT count(*), coalesce(sum(length(state)), 0) FROM t_acme.{table}")
            counts += list(cursor.fetchone())
    return (Tenant.objects.count(), ApiToken.objects.count(), Membership.objects.count(), *counts)


@pytest.fixture
def client_for(world: Any) -> Any:
    def make(slug: str, role: str) -> Api:
        return Api(host_of(slug), world.tokens[(slug, role)])

    return make


BAD_BODIES = {
    "malformed_json": ('{"name": ', 400, "malformed_request"),
    # Half a UTF-16 surrogate pair, in a key and in a value: no character at all.
    "lone_surrogate": ('{"name": "a\\ud800", "\\udfff": 1}', 400, "malformed_request"),
    "not_json_constant": ('{"pending_days": NaN}', 400, "malformed_request"),
    "not_an_object": ("[1, 2, 3]", 400, "validation_error"),
    "unknown_field": ('{"surely_not_a_field": "x"}', 400, "validation_error"),
    "wrong_types": (
        '{"name": 7, "slug": 7, "role": 7, "pending_days": "7", "ciphertext": 7, "items": {}}',
        400,
        "validation_error",
    ),
}


@pytest.mark.parametrize("bad", list(BAD_BODIES))
@pytest.mark.parametrize(("slug", "route", "method", "role"), _cases())
def test_bad_bodies_get_a_problem_and_change_nothing(
    client_for: Any, slug: str, route: Route, method: str, role: str, bad: str
) -> None:
    body, status, code = BAD_BODIES[bad]
    before = _fingerprint()
    response = client_for(slug, role).call(method, route.path, raw=body)
    assert response.status_code < 500
    if response.status_code == 404 and response.json_body["code"] in {
        "key_not_found",
        "tenant_not_found",
    }:
        pytest.fail("the body must be validated before anything is looked up")
    assert_problem(response, status, code)
    assert _fingerprint() == before


@pytest.mark.parametrize(("slug", "route", "method", "role"), _cases())
def test_bodies_over_one_mebibyte_get_413(
    client_for: Any, slug: str, route: Route, method: str, role: str
) -> None:
    body = '{"name": "' + "x" * (1024 * 1024) + '"}'
    assert_problem(
        client_for(slug, role).call(method, route.path, raw=body), 413, "payload_too_large"
    )


def test_a_wrong_content_type_gets_415(client_for: Any) -> None:
    response = client_for("acme", "tenant_admin").call(
        "POST", "/api/v1/tokens/", raw="name=x", content_type="application/x-www-form-urlencoded"
    )
    assert_problem(response, 415, "unsupported_media_type")


def test_unknown_api_paths_get_a_problem(client_for: Any) -> None:
    assert_problem(client_for("acme", "tenant_admin").get("/api/v1/nope/"), 404, "not_found")


@pytest.mark.parametrize(("slug", "route", "method", "role"), _cases())
def test_a_refused_role_with_a_body_that_does_not_parse_gets_its_403(
    client_for: Any, slug: str, route: Route, method: str, role: str
) -> None:
    # Found by tests/fuzz: auditing a refused data-key call read the body, which then failed
    # to parse inside the error path: a 500 instead of the refusal.
    allowed = getattr(route.view_class, "method_roles", {}).get(
        method, route.view_class.allowed_roles
    )
    wrong = [r for r in TENANT_ROLES if r not in allowed] if slug != "platform" else []
    if not wrong:
        pytest.skip("every role of this host may call it")
    response = client_for(slug, wrong[0]).call(method, route.path, raw=b"\x12\xc3\x9a\xda\x98")
    assert_problem(response, 403, "role_not_allowed")


@pytest.mark.parametrize("path", ["/api/v1/tokens/", "/api/v1/audit/events/"])
def test_a_cursor_that_is_not_ours_gets_a_400(client_for: Any, path: str) -> None:
    # DRF answers 404 "Invalid cursor", as if the list were gone.
    response = client_for("acme", "tenant_admin").get(f"{path}?cursor=not-a-cursor")
    assert_problem(response, 400, "invalid_cursor")
