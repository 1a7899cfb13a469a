# ruff: noqa: F401, F811  (the idp fixture is imported from tests/sso and used as a parameter)
"""Attacks on single sign-on (issue 12): a callback not started in this browser or replayed,
ID tokens of another issuer or audience, badly signed (another key, or HS256 with the client
secret), expired or with another nonce; an unverified email or a disallowed domain; a person of
tenant A signing in to tenant B; taking over a linked account by its email; password sign-in
when the tenant turned it off; an open redirect via `next`; the client secret leaking; the
provider's role map granting an admin role that the approval policy gates."""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import User
from django.test import Client
from joserfc.jwk import OctKey, RSAKey

from apps.core.roles import Role
from apps.sso.models import OidcProvider, SsoIdentity
from apps.tenants.models import Membership
from tests.approvals.conftest import add_key_admin
from tests.audit.coveragekit import Log
from tests.conftest import PASSWORD, World
from tests.helpers import Api, host_of
from tests.sso.conftest import idp  # the fixture
from tests.sso.idpkit import CLIENT_SECRET, Idp
from tests.sso.ssokit import at_provider, configure, person, sign_in, signed_in_as, start


def _refused(answer: Any, code: str) -> None:
    assert answer.status_code == 403, (answer.status_code, answer.content[:300])
    assert f">{code}<" in answer.content.decode()


@pytest.fixture
def acme(world: World, idp: Idp) -> Idp:
    configure(world.tenants["acme"], idp)
    idp.person = person()
    return idp


# --- the round trip ---------------------------------------------------------------------


def test_a_callback_from_another_browser_is_refused(acme: Idp) -> None:
    """Login CSRF: a victim's browser is sent the attacker's callback (code and state)."""
    attacker = Client()
    callback = at_provider(start(attacker, "acme"))
    victim = Client()
    _refused(victim.get(callback, HTTP_HOST=host_of("acme")), "state_mismatch")
    assert signed_in_as(victim, "acme") is None


def test_a_callback_with_another_state_is_refused(acme: Idp) -> None:
    client = Client()
    callback = at_provider(start(client, "acme"))
    forged = callback.replace("state=", "state=x")
    _refused(client.get(forged, HTTP_HOST=host_of("acme")), "state_mismatch")


def test_a_callback_is_accepted_once(acme: Idp) -> None:
    client = Client()
    url = start(client, "acme")
    cookie = client.cookies["kcm_sso_state"].value
    callback = at_provider(url)
    assert client.get(callback, HTTP_HOST=host_of("acme")).status_code == 200
    replay = Client()
    replay.cookies["kcm_sso_state"] = cookie  # the attacker copied the cookie too
    _refused(replay.get(callback, HTTP_HOST=host_of("acme")), "state_unknown")
    assert signed_in_as(replay, "acme") is None


def test_the_authorization_request_uses_pkce_state_and_nonce(acme: Idp) -> None:
    query = parse_qs(urlsplit(start(Client(), "acme")).query)
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43
    assert len(query["state"][0]) >= 40 and len(query["nonce"][0]) >= 40
    assert query["scope"] == ["openid email profile"]


def test_a_code_without_its_verifier_is_refused_by_the_provider(acme: Idp) -> None:
    """An intercepted code is useless without the verifier only KCM holds."""
    client = Client()
    callback = at_provider(start(client, "acme"))
    for grant in acme.codes.values():
        grant.challenge = "another-challenge"
    _refused(client.get(callback, HTTP_HOST=host_of("acme")), "code_rejected")


# --- the ID token -----------------------------------------------------------------------

BAD_TOKENS = {
    "another issuer": ({"claims": {"iss": "https://evil.example"}}, "wrong_issuer"),
    "another audience": ({"claims": {"aud": "someone-else"}}, "wrong_audience"),
    "shared audience without azp": ({"claims": {"aud": ["kcm-test", "other"]}}, "wrong_audience"),
    "expired": (
        {"claims": {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}},
        "id_token_expired",
    ),
    "another nonce": ({"claims": {"nonce": "replayed-nonce"}}, "nonce_mismatch"),
    "a key not in the JWKS": (
        {"key": RSAKey.generate_key(2048, parameters={"kid": "k1"})},
        "bad_signature",
    ),
}


@pytest.mark.parametrize("tamper,code", BAD_TOKENS.values(), ids=list(BAD_TOKENS))
def test_a_bad_id_token_is_refused(world: World, acme: Idp, tamper: dict, code: str) -> None:
    acme.tamper = tamper
    client = Client()
    log = Log("t_acme")
    _refused(sign_in(client, "acme"), code)
    assert signed_in_as(client, "acme") is None
    assert not User.objects.filter(email="alice@example.com").exists()
    [failed] = [e for e in log.new() if e.action == "auth.login_failed"]
    assert failed.error_code == code and failed.outcome == "denied"


def test_an_id_token_signed_with_the_client_secret_is_refused(acme: Idp) -> None:
    """Algorithm confusion: HS256 keyed with the (known to the provider) client secret."""
    from joserfc import jwt

    original = acme.id_token

    def hs256(grant: Any) -> str:
        claims = json.loads(
            __import__("base64").urlsafe_b64decode(original(grant).split(".")[1] + "==")
        )
        return jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(CLIENT_SECRET))

    acme.id_token = hs256  # type: ignore[method-assign]
    _refused(sign_in(Client(), "acme"), "bad_signature")


def test_a_discovery_document_naming_another_issuer_is_refused(world: World, acme: Idp) -> None:
    from apps.sso import oidc

    oidc._discovery_cache.clear()
    acme.tamper = {"discovered_issuer": "https://evil.example"}
    answer = Client().get("/sso/login/", HTTP_HOST=host_of("acme"))
    assert answer.status_code == 503
    assert "sso_provider_unavailable" in answer.content.decode()


# --- who may sign in --------------------------------------------------------------------


def test_an_unverified_email_is_refused(acme: Idp) -> None:
    acme.person = person(email_verified=False)
    _refused(sign_in(Client(), "acme"), "email_unverified")
    acme.person = person(email_verified="true")  # a string is not a verified flag
    _refused(sign_in(Client(), "acme"), "email_unverified")


def test_a_disallowed_email_domain_is_refused(acme: Idp) -> None:
    for email in ("mallory@evil.com", "mallory@example.com.evil.com", "mallory@sub.example.com"):
        acme.person = person(sub=email, email=email)
        _refused(sign_in(Client(), "acme"), "domain_not_allowed")
    assert not SsoIdentity.objects.exists()


def test_a_person_of_tenant_a_cannot_sign_in_to_tenant_b(world: World, acme: Idp) -> None:
    """Acme's provider signs people in to acme only; globex has none (and its own one would
    know nothing of acme's people): the acme session is worthless on globex."""
    client = Client()
    sign_in(client, "acme")
    assert signed_in_as(client, "acme") == "alice@example.com"
    assert signed_in_as(client, "globex") is None
    assert client.get("/keys/", HTTP_HOST=host_of("globex")).status_code in (302, 403)
    # globex has no provider: its sign-in round trip does not exist.
    answer = Client().get("/sso/login/", HTTP_HOST=host_of("globex"))
    assert answer.status_code == 404 and "sso_not_configured" in answer.content.decode()
    # A callback of acme's sign-in brought to globex's host is refused.
    other = Client()
    callback = at_provider(start(other, "acme"))
    _refused(other.get(callback, HTTP_HOST=host_of("globex")), "state_unknown")


def test_a_provider_of_tenant_b_does_not_reach_a_user_of_tenant_a(world: World, idp: Idp) -> None:
    """Globex's admin points globex at a provider that claims acme's admin's email: the person
    becomes a new user of globex, never acme's admin."""
    victim = world.users[("acme", "tenant_admin")]
    victim.email = "victim@example.com"
    victim.save()
    configure(world.tenants["globex"], idp, role_map={"kcm-admins": ["tenant_admin"]})
    idp.person = person(sub="evil", email="victim@example.com", groups=["kcm-admins"])
    client = Client()
    sign_in(client, "globex")
    assert signed_in_as(client, "globex") == "victim@example.com"  # a new, separate user
    assert SsoIdentity.objects.get(subject="evil").user != victim
    assert signed_in_as(client, "acme") is None


def test_a_linked_account_is_not_taken_over_by_its_email(world: World, acme: Idp) -> None:
    sign_in(Client(), "acme")  # alice-sub links alice@example.com
    acme.person = person(sub="mallory-sub", email="alice@example.com")
    client = Client()
    # Mallory's account at the provider claims alice's email: refused, never alice's session.
    _refused(sign_in(client, "acme"), "email_linked_elsewhere")
    assert signed_in_as(client, "acme") is None
    alice = User.objects.get(username="alice@example.com")
    assert SsoIdentity.objects.filter(user=alice).count() == 1


# --- local passwords --------------------------------------------------------------------


def test_password_sign_in_is_refused_when_local_passwords_are_off(
    world: World,
    idp: Idp,
) -> None:
    configure(world.tenants["acme"], idp, local_passwords=False)
    log = Log("t_acme")
    client = Client()
    answer = client.post(
        "/login/",
        {"username": "acme-tenant_admin", "password": PASSWORD},
        HTTP_HOST=host_of("acme"),
    )
    assert answer.status_code == 403
    assert "single sign-on provider only" in answer.content.decode()
    assert 'name="password"' not in answer.content.decode()
    assert signed_in_as(client, "acme") is None
    [failed] = [e for e in log.new() if e.action == "auth.login_failed"]
    assert failed.error_code == "local_passwords_off"
    # Another tenant's passwords are untouched.
    client.post(
        "/login/",
        {"username": "globex-tenant_admin", "password": PASSWORD},
        HTTP_HOST=host_of("globex"),
    )
    assert signed_in_as(client, "globex") == "globex-tenant_admin"


def test_local_passwords_go_off_only_with_a_provider(world: World, api: Any) -> None:
    admin = api("acme", "tenant_admin")
    answer = admin.call("PATCH", "/api/v1/sso/", {"local_passwords": False})
    assert answer.status_code == 409 and answer.json_body["code"] == "local_passwords_needed"


def test_the_provider_is_not_removed_while_passwords_are_off(
    world: World,
    idp: Idp,
    api: Any,
) -> None:
    configure(world.tenants["acme"], idp, local_passwords=False)
    admin = api("acme", "tenant_admin")
    answer = admin.call("DELETE", "/api/v1/sso/")
    assert answer.status_code == 409 and answer.json_body["code"] == "local_passwords_needed"
    assert admin.call("PATCH", "/api/v1/sso/", {"local_passwords": True}).status_code == 200
    assert admin.call("DELETE", "/api/v1/sso/").status_code == 204


# --- redirects and secrets --------------------------------------------------------------


@pytest.mark.parametrize(
    "next_url",
    ["https://evil.example/", "//evil.example/", "http://acme.localhost.evil.example/", "/\\evil"],
)
def test_next_never_leaves_the_tenant(acme: Idp, next_url: str) -> None:
    answer = sign_in(Client(), "acme", next_url=next_url)
    assert answer.status_code == 200
    assert 'content="0;url=/"' in answer.content.decode()


def test_the_client_secret_never_shows(world: World, acme: Idp, api: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    log = Log("t_acme")
    stored = OidcProvider.objects.get(tenant=world.tenants["acme"])
    assert CLIENT_SECRET.encode() not in bytes(stored.client_secret)
    admin = api("acme", "tenant_admin")
    body = admin.get("/api/v1/sso/").json_body
    assert body["client_secret_set"] is True and "client_secret" not in body
    changed = admin.call(
        "PUT",
        "/api/v1/sso/",
        {
            "name": "Test IdP",
            "issuer": acme.issuer,
            "client_id": "kcm-test",
            "client_secret": CLIENT_SECRET,
            "role_map": {"kcm-keys": ["key_admin"]},
            "allowed_domains": ["example.com"],
        },
    )
    assert changed.status_code == 200 and CLIENT_SECRET not in changed.content.decode()
    sign_in(Client(), "acme")
    client = Client()
    client.force_login(world.users[("acme", "tenant_admin")])
    page = client.get("/sso/", HTTP_HOST=host_of("acme")).content.decode()
    assert CLIENT_SECRET not in page
    events = json.dumps([[e.action, e.details] for e in log.new()])
    assert "sso.update" in events and CLIENT_SECRET not in events
    assert CLIENT_SECRET not in caplog.text


def test_a_sealed_secret_copied_to_another_tenant_does_not_open(
    world: World,
    acme: Idp,
    idp: Idp,
) -> None:
    stolen = bytes(OidcProvider.objects.get(tenant=world.tenants["acme"]).client_secret)
    configure(world.tenants["globex"], idp, client_secret="globex's own secret")
    OidcProvider.objects.filter(tenant=world.tenants["globex"]).update(client_secret=stolen)
    answer = sign_in(Client(), "globex")
    assert answer.status_code == 503 and "hsm_unavailable" in answer.content.decode()


def test_a_token_cannot_configure_sso_without_tenant_admin(world: World, api: Any) -> None:
    for role in ("key_admin", "key_user", "auditor"):
        assert api("acme", role).get("/api/v1/sso/").status_code == 403
    assert Api(host_of("acme"), world.tokens[("globex", "tenant_admin")]).get(
        "/api/v1/sso/"
    ).status_code in (401, 403)


def test_one_address_cannot_flood_sign_in_starts(acme: Idp) -> None:
    from apps.sso.models import SsoLogin
    from apps.sso.views import STARTS_PER_MINUTE

    client = Client()
    for _ in range(STARTS_PER_MINUTE):
        assert client.get("/sso/login/", HTTP_HOST=host_of("acme")).status_code == 302
    answer = client.get("/sso/login/", HTTP_HOST=host_of("acme"))
    assert answer.status_code == 429 and ">throttled<" in answer.content.decode()
    assert SsoLogin.objects.count() == STARTS_PER_MINUTE


# --- four eyes ------------------------------------------------------------------------------


def test_the_provider_cannot_grant_an_admin_role_that_needs_approval(
    world: World, acme: Idp, api: Any
) -> None:
    """A tenant admin who controls the provider's groups (or its role map) would otherwise make
    a second account key admin at its next sign-in, round the approval policy that gates
    `member.role_change`."""
    for n in range(3):
        add_key_admin(world, "acme", f"approver-{n}")
    admin = api("acme", Role.TENANT_ADMIN)
    policy = {"actions": ["member.role_change"], "required": 2}
    assert admin.call("PUT", "/api/v1/approvals/policy/", policy).status_code == 200

    # Mapped to key_admin only: refused, nobody created.
    acme.person = person(sub="second-sub", email="second@example.com", groups=["kcm-keys"])
    client = Client()
    answer = sign_in(client, "acme")
    assert answer.status_code == 409 and ">approval_required<" in answer.content.decode()
    assert signed_in_as(client, "acme") is None
    assert not User.objects.filter(username="second@example.com").exists()

    # Mapped to auditor and key_admin: signed in as an auditor, key_admin withheld and recorded.
    acme.person = person(
        sub="second-sub", email="second@example.com", groups=["kcm-keys", "kcm-audit"]
    )
    log = Log(world.tenants["acme"].schema_name)
    sign_in(client, "acme")
    assert signed_in_as(client, "acme") == "second@example.com"
    membership = Membership.objects.get(user__username="second@example.com")
    assert membership.roles == [Role.AUDITOR]
    (withheld,) = [e for e in log.new() if e.action == "member.role_withheld"]
    assert withheld.details == {"withheld": [Role.KEY_ADMIN], "by": "sso"}

    # The next sign-in (same groups) still does not make them key admin.
    sign_in(Client(), "acme")
    membership.refresh_from_db()
    assert membership.roles == [Role.AUDITOR]

    # Without the policy, the provider grants it as before.
    policy = {"actions": [], "required": 2}
    assert admin.call("PUT", "/api/v1/approvals/policy/", policy).status_code == 200
    sign_in(Client(), "acme")
    membership.refresh_from_db()
    assert sorted(membership.roles) == sorted([Role.AUDITOR, Role.KEY_ADMIN])
