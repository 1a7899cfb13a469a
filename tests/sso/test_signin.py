"""Signing in through the tenant's provider: a new member with the mapped role, roles that
follow the provider at each sign-in, linking an invited member by verified email, refusals
with a clear page, and the audit trail."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.test import Client

from apps.sso.models import SsoIdentity
from apps.tenants import services as tenant_services
from apps.tenants.models import Membership
from tests.audit.coveragekit import Log
from tests.conftest import World
from tests.helpers import host_of
from tests.sso.idpkit import Idp
from tests.sso.ssokit import configure, person, sign_in, signed_in_as


def _roles(world: World, username: str) -> list[str]:
    return Membership.objects.get(tenant=world.tenants["acme"], user__username=username).roles


def test_the_sign_in_page_offers_the_provider(world: World, idp: Idp) -> None:
    assert "Sign in with" not in Client().get("/login/", HTTP_HOST=host_of("acme")).content.decode()
    configure(world.tenants["acme"], idp)
    page = Client().get("/login/", HTTP_HOST=host_of("acme")).content.decode()
    assert "Sign in with Test IdP" in page
    assert 'name="password"' in page  # local passwords still on
    # Another tenant without a provider shows no button.
    assert (
        "Sign in with" not in Client().get("/login/", HTTP_HOST=host_of("globex")).content.decode()
    )


def test_a_new_person_becomes_a_member_with_the_mapped_role(world: World, idp: Idp) -> None:
    configure(world.tenants["acme"], idp)
    idp.person = person(groups=["kcm-keys", "unrelated"])
    log = Log("t_acme")
    client = Client()
    answer = sign_in(client, "acme", next_url="/keys/")
    assert answer.status_code == 200
    assert 'content="0;url=/keys/"' in answer.content.decode()
    assert signed_in_as(client, "acme") == "alice@example.com"
    user = User.objects.get(username="alice@example.com")
    assert not user.has_usable_password()
    assert _roles(world, "alice@example.com") == ["key_admin"]
    assert client.get("/keys/", HTTP_HOST=host_of("acme")).status_code == 200
    assert client.get("/members/", HTTP_HOST=host_of("acme")).status_code == 403
    [login] = [e for e in log.new() if e.action == "auth.login"]
    assert login.details["method"] == "sso"
    assert login.actor == "user:alice@example.com"
    assert [e.action for e in log.new()][:3] == ["sso.link", "member.join", "auth.login"]


def test_roles_follow_the_provider_at_each_sign_in(world: World, idp: Idp) -> None:
    configure(world.tenants["acme"], idp)
    idp.person = person(groups=["kcm-keys"])
    sign_in(Client(), "acme")
    idp.person = person(groups=["kcm-audit", "kcm-admins"])
    client = Client()
    sign_in(client, "acme")
    assert _roles(world, "alice@example.com") == ["auditor", "tenant_admin"]
    assert client.get("/members/", HTTP_HOST=host_of("acme")).status_code == 200
    assert SsoIdentity.objects.filter(subject="alice-sub").count() == 1


def test_no_mapped_role_is_refused_with_a_clear_page(world: World, idp: Idp) -> None:
    configure(world.tenants["acme"], idp)
    idp.person = person(groups=["marketing"])
    log = Log("t_acme")
    client = Client()
    answer = sign_in(client, "acme")
    assert answer.status_code == 403
    body = answer.content.decode()
    assert "holds no role in this tenant" in body and "no_mapped_role" in body
    assert signed_in_as(client, "acme") is None
    assert not User.objects.filter(username="alice@example.com").exists()
    [failed] = [e for e in log.new() if e.action == "auth.login_failed"]
    assert failed.error_code == "no_mapped_role" and failed.details["method"] == "sso"


def test_an_invited_member_is_linked_by_verified_email(world: World, idp: Idp) -> None:
    acme = world.tenants["acme"]
    bob = tenant_services.user_create(
        username="bob", password="a long and fresh passphrase 77", email="Bob@Example.com"
    )
    tenant_services.membership_set(tenant=acme, user=bob, roles=["auditor"])
    configure(acme, idp)
    idp.person = person(sub="bob-at-idp", email="bob@example.com", groups=["kcm-keys"])
    client = Client()
    sign_in(client, "acme")
    assert signed_in_as(client, "acme") == "bob"
    assert _roles(world, "bob") == ["key_admin"]
    assert SsoIdentity.objects.get(subject="bob-at-idp").user == bob


def test_the_last_tenant_admin_is_not_taken_away_by_the_provider(world: World, idp: Idp) -> None:
    acme = world.tenants["acme"]
    configure(acme, idp)
    idp.person = person(groups=["kcm-admins"])
    sign_in(Client(), "acme")
    # The world's acme admin leaves: alice is now the only tenant admin.
    Membership.objects.filter(tenant=acme, user=world.users[("acme", "tenant_admin")]).delete()
    idp.person = person(groups=["kcm-keys"])
    client = Client()
    answer = sign_in(client, "acme")
    assert answer.status_code == 409
    assert "last tenant admin" in answer.content.decode()
    assert _roles(world, "alice@example.com") == ["tenant_admin"]
    assert signed_in_as(client, "acme") is None


def test_the_provider_refusing_is_a_clear_page(world: World, idp: Idp, client: Any) -> None:
    configure(world.tenants["acme"], idp)
    c = Client()
    from tests.sso.ssokit import start

    start(c, "acme")
    state = c.cookies["kcm_sso_state"].value.split(":")[0]
    answer = c.get(f"/sso/callback/?error=access_denied&state={state}", HTTP_HOST=host_of("acme"))
    assert answer.status_code == 403
    assert "provider_error" in answer.content.decode()


def test_sign_in_goes_through_the_common_end_and_its_second_step(world: World, idp: Idp) -> None:
    """The callback ends in apps.tenants.signin.sign_in_finish: a registered further step (MFA)
    diverts the browser before any session starts."""
    from django.http import HttpResponseRedirect

    from apps.tenants import signin

    seen: list[str] = []

    def step(request: Any, user: Any, principal: Any, method: str, next_url: str) -> Any:
        seen.append(method)
        return HttpResponseRedirect("/second-step/")

    configure(world.tenants["acme"], idp)
    idp.person = person()
    signin.second_step_register(step)
    try:
        client = Client()
        answer = sign_in(client, "acme")
    finally:
        signin._second_steps.remove(step)
    assert seen == ["sso"]
    assert 'content="0;url=/second-step/"' in answer.content.decode()
    assert signed_in_as(client, "acme") is None
