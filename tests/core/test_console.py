"""Console pages through the real middleware stack (CSRF on): sign-in, keys, members, tokens."""

from __future__ import annotations

import re
from typing import Any

from django.test import Client

from apps.core.roles import Role
from apps.tenants.models import ApiToken, Tenant
from tests.conftest import PASSWORD
from tests.helpers import Api


def _csrf(client: Client, path: str, host: str) -> str:
    page = client.get(path, HTTP_HOST=host)
    match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content)
    assert match, page.content[:300]
    return match.group(1).decode()


def _signed_in(world: Any, slug: str, role: str) -> Client:
    client = Client(enforce_csrf_checks=True)
    host = "localhost" if slug == "platform" else f"{slug}.localhost"
    token = _csrf(client, "/login/", host)
    response = client.post(
        "/login/",
        {
            "username": world.users[(slug, role)].username,
            "password": PASSWORD,
            "csrfmiddlewaretoken": token,
        },
        HTTP_HOST=host,
    )
    assert response.status_code == 302, response.content[:300]
    return client


def test_sign_in_reaches_the_dashboard_with_tenant_and_user(world: Any) -> None:
    client = _signed_in(world, "acme", Role.KEY_ADMIN)
    page = client.get("/", HTTP_HOST="acme.localhost")
    assert page.status_code == 200
    assert b"Acme" in page.content and b"acme-key_admin" in page.content


def test_a_wrong_password_or_a_foreign_user_cannot_sign_in(world: Any) -> None:
    client = Client()
    for username, password in (("acme-key_admin", "wrong"), ("globex-key_admin", PASSWORD)):
        response = client.post(
            "/login/", {"username": username, "password": password}, HTTP_HOST="acme.localhost"
        )
        assert response.status_code == 400
        assert b"no access to this tenant" in response.content


def test_forms_without_a_csrf_token_are_refused(world: Any) -> None:
    client = _signed_in(world, "acme", Role.TENANT_ADMIN)
    response = client.post("/tokens/", {"name": "x", "role": "auditor"}, HTTP_HOST="acme.localhost")
    assert response.status_code == 403
    assert not ApiToken.objects.filter(name="x").exists()


def test_a_key_admin_builds_the_chain_in_the_console(world: Any) -> None:
    client = _signed_in(world, "acme", Role.KEY_ADMIN)
    host = "acme.localhost"
    token = _csrf(client, "/keys/", host)
    client.post(
        "/keys/customer-keys/new/", {"name": "root", "csrfmiddlewaretoken": token}, HTTP_HOST=host
    )
    client.post(
        "/keys/service-keys/new/",
        {"name": "payments", "csrfmiddlewaretoken": token},
        HTTP_HOST=host,
    )
    page = client.get("/keys/", HTTP_HOST=host).content.decode()
    assert "L1 root" in page and "L3 payments" in page and "Rotate" in page
    tree = (
        Api(host, world.tokens[("acme", Role.KEY_ADMIN)]).get("/api/v1/keys/").json_body["results"]
    )
    l1_id = tree[0]["id"]
    client.post(f"/keys/{l1_id}/disable/", {"csrfmiddlewaretoken": token}, HTTP_HOST=host)
    assert "state-DISABLED" in client.get("/keys/", HTTP_HOST=host).content.decode()


def test_an_auditor_sees_the_chain_without_buttons(world: Any) -> None:
    client = _signed_in(world, "acme", Role.AUDITOR)
    page = client.get("/keys/", HTTP_HOST="acme.localhost")
    assert (
        page.status_code == 200
        and b"Rotate" not in page.content
        and b"New customer key" not in page.content
    )


def test_a_tenant_admin_creates_a_token_that_is_shown_once_and_works(world: Any) -> None:
    client = _signed_in(world, "acme", Role.TENANT_ADMIN)
    host = "acme.localhost"
    token = _csrf(client, "/tokens/", host)
    page = client.post(
        "/tokens/",
        {"name": "app", "role": "tenant_admin", "csrfmiddlewaretoken": token},
        HTTP_HOST=host,
    )
    plaintext = re.search(rb'data-testid="new-token">([^<]+)<', page.content)
    assert plaintext
    assert (
        Api(host, plaintext.group(1).decode()).get("/api/v1/me/").json_body["role"]
        == "tenant_admin"
    )
    assert plaintext.group(1) not in client.get("/tokens/", HTTP_HOST=host).content


def test_a_platform_operator_manages_tenants(world: Any) -> None:
    client = _signed_in(world, "platform", Role.PLATFORM_OPERATOR)
    token = _csrf(client, "/tenants/", "localhost")
    client.post(
        "/tenants/",
        {"slug": "umbrella", "name": "Umbrella", "csrfmiddlewaretoken": token},
        HTTP_HOST="localhost",
    )
    assert Tenant.objects.get(slug="umbrella").status == "ACTIVE"
    client.post(
        "/tenants/umbrella/suspend/",
        {"reason": "test", "csrfmiddlewaretoken": token},
        HTTP_HOST="localhost",
    )
    assert Tenant.objects.get(slug="umbrella").status == "SUSPENDED"
    assert (
        client.post(
            "/tenants/umbrella/explode/", {"csrfmiddlewaretoken": token}, HTTP_HOST="localhost"
        ).status_code
        == 404
    )


def test_the_software_provider_shows_a_warning_on_every_page(world: Any, settings: Any) -> None:
    settings.KCM_HSM_PROVIDER = "software"
    page = Client().get("/login/", HTTP_HOST="acme.localhost")
    assert b"SOFTWARE provider" in page.content


def test_readiness_reports_database_broker_and_hsm(db: None) -> None:
    response = Client().get("/readyz", HTTP_HOST="localhost")
    body = response.json()
    assert response.status_code == 200, body
    assert {name for name, ok in body["checks"].items() if ok is True} == {
        "database",
        "broker",
        "hsm",
    }


def test_the_openapi_schema_describes_the_api(db: None) -> None:
    response = Client().get("/api/schema/?format=json", HTTP_HOST="acme.localhost")
    assert response.status_code == 200
    import json

    paths = json.loads(response.content)["paths"]
    assert "/api/v1/service-keys/{name}/generate-data-key/" in paths
    assert Client().get("/api/docs/", HTTP_HOST="acme.localhost").status_code == 200


def test_the_serving_process_is_named_only_outside_production(api: Any, settings: Any) -> None:
    from apps.core.roles import Role

    assert api("acme", Role.AUDITOR).get("/api/v1/me/").has_header("X-KCM-Worker")
    settings.PRODUCTION = True
    assert not api("acme", Role.AUDITOR).get("/api/v1/me/").has_header("X-KCM-Worker")
