"""A tenant admin configures the provider through the API and the console: bad settings get a
400 with a stable code and change nothing; the secret is write-only."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.sso.models import OidcProvider
from tests.conftest import World
from tests.helpers import assert_problem, host_of
from tests.sso.idpkit import CLIENT_ID, CLIENT_SECRET, Idp


def _body(idp: Idp, **changes: Any) -> dict[str, Any]:
    return {
        "name": "Corp IdP",
        "issuer": idp.issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "role_claim": "groups",
        "role_map": {"kcm-admins": ["tenant_admin"]},
        "allowed_domains": ["Example.com"],
        **changes,
    }


def test_an_admin_configures_reads_and_removes_the_provider(
    world: World, api: Any, idp: Idp
) -> None:
    admin = api("acme", "tenant_admin")
    assert_problem(admin.get("/api/v1/sso/"), 404, "sso_not_configured")
    answer = admin.call("PUT", "/api/v1/sso/", _body(idp))
    assert answer.status_code == 200, answer.content
    assert answer.json_body["allowed_domains"] == ["example.com"]
    assert answer.json_body["client_secret_set"] is True
    assert answer.json_body["local_passwords"] is True
    # Changing without the secret keeps it.
    body = _body(idp, name="Renamed")
    del body["client_secret"]
    kept = admin.call("PUT", "/api/v1/sso/", body)
    assert kept.status_code == 200 and kept.json_body["name"] == "Renamed"
    off = admin.call("PATCH", "/api/v1/sso/", {"local_passwords": False})
    assert off.json_body["local_passwords"] is False
    admin.call("PATCH", "/api/v1/sso/", {"local_passwords": True})
    assert admin.call("DELETE", "/api/v1/sso/").status_code == 204
    assert not OidcProvider.objects.exists()


BAD = {
    "not an https issuer": ({"issuer": "ftp://idp.example"}, "invalid_issuer"),
    "issuer that does not answer": ({"issuer": "http://127.0.0.1:9/"}, "issuer_discovery_failed"),
    "unknown role": ({"role_map": {"g": ["superuser"]}}, "invalid_role_map"),
    "empty role map": ({"role_map": {}}, "invalid_role_map"),
    "bad domain": ({"allowed_domains": ["not a domain"]}, "invalid_domain"),
    "no secret": ({"client_secret": None}, "client_secret_required"),
}


@pytest.mark.parametrize("change,code", BAD.values(), ids=list(BAD))
def test_bad_settings_are_refused_with_a_code(
    world: World, api: Any, idp: Idp, change: dict, code: str
) -> None:
    body = {k: v for k, v in _body(idp, **change).items() if v is not None}
    assert_problem(api("acme", "tenant_admin").call("PUT", "/api/v1/sso/", body), 400, code)
    assert not OidcProvider.objects.exists()


def test_the_console_page_saves_settings_and_never_shows_the_secret(world: World, idp: Idp) -> None:
    client = Client()
    client.force_login(world.users[("acme", "tenant_admin")])
    host = host_of("acme")
    page = client.get("/sso/", HTTP_HOST=host).content.decode()
    assert "http://acme.localhost/sso/callback/" in page
    form = {
        "name": "Corp IdP",
        "issuer": idp.issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "role_claim": "groups",
        "role_map": "kcm-admins = tenant_admin\nkcm-keys = key_admin, auditor",
        "allowed_domains": "example.com, example.org",
        "local_passwords": "on",
    }
    answer = client.post("/sso/", form, HTTP_HOST=host, follow=True)
    assert "Single sign-on settings saved." in answer.content.decode()
    provider = OidcProvider.objects.get()
    assert provider.role_map == {
        "kcm-admins": ["tenant_admin"],
        "kcm-keys": ["auditor", "key_admin"],
    }
    assert provider.allowed_domains == ["example.com", "example.org"]
    page = client.get("/sso/", HTTP_HOST=host).content.decode()
    assert CLIENT_SECRET not in page and "stored" in page
    bad = client.post("/sso/", {**form, "role_map": "nonsense"}, HTTP_HOST=host)
    assert bad.status_code == 400 and "claim value = role" in bad.content.decode()
    wrong = client.post("/sso/", {**form, "role_map": "g = root"}, HTTP_HOST=host)
    assert wrong.status_code == 400 and "Map claim values" in wrong.content.decode()


def test_an_operator_turns_local_passwords_back_on_from_the_shell(world: World, idp: Idp) -> None:
    from django.core.management import call_command

    from tests.sso.ssokit import configure

    configure(world.tenants["acme"], idp, local_passwords=False)
    client = Client()
    client.force_login(world.users[("acme", "tenant_admin")])
    assert (
        "sso-settings-link" in client.get("/members/", HTTP_HOST=host_of("acme")).content.decode()
    )
    call_command("sso_local_passwords", "acme", "on")
    assert OidcProvider.objects.get().local_passwords is True
    page = Client().get("/login/", HTTP_HOST=host_of("acme")).content.decode()
    assert 'name="password"' in page
