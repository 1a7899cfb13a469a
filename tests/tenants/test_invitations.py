"""The invitation API and console pages: who lists and revokes what, bad input, cross-tenant
calls, and the inviter's console flow (link shown once)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from apps.core.errors import KcmError
from apps.core.roles import Role
from apps.tenants import invitations, services
from apps.tenants.models import Invitation, Membership
from tests.conftest import PASSWORD, World
from tests.helpers import assert_problem

ADMIN = ("acme", Role.TENANT_ADMIN)


def _invite(api: Any, who: tuple[str, str], roles: list[str], **body: Any) -> Any:
    return api(*who).post("/api/v1/invitations/", {"roles": roles, **body})


def test_an_admin_lists_every_pending_invitation_others_only_their_own(
    api: Any, world: World
) -> None:
    by_admin = _invite(api, ADMIN, ["tenant_admin"], email="a@acme.example").json_body
    by_key_admin = _invite(api, ("acme", Role.KEY_ADMIN), ["key_admin"]).json_body
    # A token acts for the person who created it.
    assert by_key_admin["created_by"] == "acme-key_admin"
    listed = api(*ADMIN).get("/api/v1/invitations/").json_body["results"]
    assert [i["id"] for i in listed] == [by_key_admin["id"], by_admin["id"]]
    assert listed[1] == {
        "id": by_admin["id"],
        "email": "a@acme.example",
        "roles": ["tenant_admin"],
        "key_grant": None,
        "created_by": "acme-tenant_admin",
        "created_at": by_admin["created_at"],
        "expires_at": by_admin["expires_at"],
    }
    own = api("acme", Role.KEY_ADMIN).get("/api/v1/invitations/").json_body["results"]
    assert [i["id"] for i in own] == [by_key_admin["id"]]
    assert api("acme", Role.AUDITOR).get("/api/v1/invitations/").json_body["results"] == []
    assert api("globex", Role.TENANT_ADMIN).get("/api/v1/invitations/").json_body["results"] == []


def test_revoking_is_for_admins_and_the_inviter_and_within_the_tenant(
    api: Any, world: World
) -> None:
    made = _invite(api, ("acme", Role.KEY_ADMIN), ["key_admin"]).json_body
    path = f"/api/v1/invitations/{made['id']}/"
    assert_problem(
        api("globex", Role.TENANT_ADMIN).call("DELETE", path), 404, "invitation_not_found"
    )
    assert_problem(api("acme", Role.AUDITOR).call("DELETE", path), 404, "invitation_not_found")
    assert api("acme", Role.KEY_ADMIN).call("DELETE", path).status_code == 204  # the inviter
    made = _invite(api, ("acme", Role.KEY_ADMIN), ["key_admin"]).json_body
    path = f"/api/v1/invitations/{made['id']}/"
    assert_problem(
        api("acme", Role.TENANT_ADMIN, on="globex").call("DELETE", path), 403, "wrong_tenant"
    )
    assert api(*ADMIN).call("DELETE", path).status_code == 204
    assert api(*ADMIN).call("DELETE", path).status_code == 204  # again: nothing changes
    assert Invitation.objects.get(pk=made["id"]).revoked_at is not None
    assert api(*ADMIN).get("/api/v1/invitations/").json_body["results"] == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"roles": []}, "validation_error"),
        ({"roles": ["platform_operator"]}, "validation_error"),
        ({"roles": "tenant_admin"}, "validation_error"),
        ({"roles": ["tenant_admin"], "email": "not-an-address"}, "validation_error"),
        ({"roles": ["tenant_admin"], "key_grant": {"service_keys": ["*"]}}, "invalid_grant"),
        ({"roles": ["tenant_admin"], "surprise": 1}, "validation_error"),
    ],
)
def test_bad_input_gets_a_400_with_a_code(api: Any, body: dict[str, Any], code: str) -> None:
    assert_problem(api(*ADMIN).post("/api/v1/invitations/", body), 400, code)


def test_the_platform_endpoints_are_for_operators_on_the_base_domain(
    api: Any, world: World
) -> None:
    assert_problem(
        api(*ADMIN).post("/api/v1/platform/tenants/acme/invitations/", {"roles": ["auditor"]}),
        404,
        "not_found",
    )
    assert_problem(
        api("platform", Role.PLATFORM_OPERATOR).post(
            "/api/v1/platform/tenants/nosuch/invitations/", {"roles": ["tenant_admin"]}
        ),
        404,
        "tenant_not_found",
    )
    # The operator sees the platform's invitations to a tenant, not the tenant's own notes.
    _invite(api, ADMIN, ["tenant_admin"], email="private@acme.example")
    listed = api("platform", Role.PLATFORM_OPERATOR).get(
        "/api/v1/platform/tenants/acme/invitations/"
    )
    assert listed.status_code == 200 and listed.json_body["results"] == []
    tenant_own = Invitation.objects.get(tenant__slug="acme").pk
    assert_problem(
        api("platform", Role.PLATFORM_OPERATOR).call(
            "DELETE", f"/api/v1/platform/tenants/acme/invitations/{tenant_own}/"
        ),
        404,
        "invitation_not_found",
    )


def test_an_operator_lists_and_revokes_the_first_admins_invitation(api: Any) -> None:
    operator = api("platform", Role.PLATFORM_OPERATOR)
    assert operator.post("/api/v1/platform/tenants/", {"slug": "fresh"}).status_code == 201
    base = "/api/v1/platform/tenants/fresh/invitations/"
    made = operator.post(base, {"roles": ["tenant_admin"]}).json_body
    assert [i["id"] for i in operator.get(base).json_body["results"]] == [made["id"]]
    assert operator.call("DELETE", f"{base}{made['id']}/").status_code == 204
    assert operator.get(base).json_body["results"] == []
    assert Invitation.objects.get(pk=made["id"]).revoked_at is not None


def test_the_old_add_by_username_is_gone_from_the_api(api: Any) -> None:
    answer = api(*ADMIN).post("/api/v1/members/", {"username": "globex-auditor", "role": "auditor"})
    assert_problem(answer, 405, "method_not_allowed")


def test_an_admin_invites_from_the_console_and_sees_the_link_once(world: World) -> None:
    client = Client()
    client.force_login(world.users[ADMIN])
    members = client.get("/members/", HTTP_HOST="acme.localhost")
    assert b'action="/members/invitations/"' in members.content
    assert b"password" not in members.content.lower()
    made = client.post(
        "/members/invitations/",
        {"roles": ["tenant_admin"], "email": "ops@acme.example"},
        HTTP_HOST="acme.localhost",
    )
    assert made.status_code == 200
    assert b'data-testid="invitation-link"' in made.content
    assert b"http://acme.localhost/invitations/" in made.content
    again = client.get("/members/invitations/", HTTP_HOST="acme.localhost")
    assert b'data-testid="invitation-link"' not in again.content
    assert b"ops@acme.example" in again.content
    refused = client.post(
        "/members/invitations/", {"roles": ["key_admin"]}, HTTP_HOST="acme.localhost"
    )
    assert b"Select a valid choice" in refused.content  # the form offers only roles held
    invitation = Invitation.objects.get(tenant=world.tenants["acme"])
    revoked = client.post(
        f"/members/invitations/{invitation.pk}/revoke/", HTTP_HOST="acme.localhost"
    )
    assert revoked.status_code == 302
    invitation.refresh_from_db()
    assert invitation.revoked_at is not None


def test_an_operator_invites_from_the_platform_console(world: World) -> None:
    client = Client()
    client.force_login(world.users[("platform", Role.PLATFORM_OPERATOR)])
    tenants = client.get("/tenants/", HTTP_HOST="localhost")
    assert b'href="/tenants/acme/invitations/"' in tenants.content
    page = client.get("/tenants/acme/invitations/", HTTP_HOST="localhost")
    assert page.status_code == 200
    refused = client.post(
        "/tenants/acme/invitations/", {"roles": ["tenant_admin"]}, HTTP_HOST="localhost"
    )
    assert b'data-testid="invitation-link"' not in refused.content
    assert b"has a tenant admin already: its admins invite its members" in refused.content
    assert client.get("/tenants/nosuch/invitations/", HTTP_HOST="localhost").status_code == 404


def test_an_existing_user_signs_in_on_the_link_to_join(api: Any, world: World) -> None:
    link = api(*ADMIN).post("/api/v1/invitations/", {"roles": ["tenant_admin"]}).json_body["link"]
    path = link.removeprefix("http://acme.localhost")
    client = Client()
    wrong = client.post(
        path,
        {"how": "sign-in", "username": "globex-auditor", "password": "not the password"},
        HTTP_HOST="acme.localhost",
    )
    assert wrong.status_code == 400 and b"Unknown user or wrong password" in wrong.content
    assert "_auth_user_id" not in client.session
    right = client.post(
        path,
        {"how": "sign-in", "username": "globex-auditor", "password": PASSWORD},
        HTTP_HOST="acme.localhost",
    )
    assert (right.status_code, right["Location"]) == (302, "/")
    member = Membership.objects.get(user__username="globex-auditor", tenant__slug="acme")
    assert member.roles == ["tenant_admin"]
    assert client.get("/members/", HTTP_HOST="acme.localhost").status_code == 200
    # Joining acme changed nothing in globex.
    assert Membership.objects.get(user__username="globex-auditor", tenant__slug="globex").roles == [
        "auditor"
    ]


def test_a_member_opening_a_link_for_their_own_tenant_is_told_and_the_link_kept(
    api: Any, world: World
) -> None:
    link = api(*ADMIN).post("/api/v1/invitations/", {"roles": ["tenant_admin"]}).json_body["link"]
    answer = Client().post(
        link.removeprefix("http://acme.localhost"),
        {"how": "sign-in", "username": "acme-auditor", "password": PASSWORD},
        HTTP_HOST="acme.localhost",
    )
    assert answer.status_code == 400 and b"member of this tenant already" in answer.content
    assert Invitation.objects.get(tenant__slug="acme").accepted_at is None


# --- races the database decides: the loser gets the check's answer, never a 500 --------------


def _miss_once(check: Callable[..., bool]) -> Callable[..., bool]:
    """`check` as a concurrent request would see it: the first call misses a row that another
    request commits just after, so the insert that follows meets the unique constraint."""
    calls = 0

    def missed_once(*args: Any, **kwargs: Any) -> bool:
        nonlocal calls
        calls += 1
        return False if calls == 1 else check(*args, **kwargs)

    return missed_once


def _sign_in_on(link: str, username: str) -> Any:
    return Client().post(
        link.removeprefix("http://acme.localhost"),
        {"how": "sign-in", "username": username, "password": PASSWORD},
        HTTP_HOST="acme.localhost",
    )


def test_accepting_a_second_link_at_the_same_moment_is_member_exists_not_a_500(
    api: Any, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = api(*ADMIN).post("/api/v1/invitations/", {"roles": ["tenant_admin"]}).json_body["link"]
    monkeypatch.setattr(invitations, "_is_member", _miss_once(invitations._is_member))
    answer = _sign_in_on(link, "acme-auditor")
    assert answer.status_code == 400 and b"member of this tenant already" in answer.content
    assert Invitation.objects.get(tenant__slug="acme").accepted_at is None
    member = Membership.objects.get(user__username="acme-auditor", tenant__slug="acme")
    assert member.roles == ["auditor"]


def test_two_sign_ups_with_one_username_at_once_give_the_loser_a_conflict_not_a_500(
    api: Any, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = api(*ADMIN).post("/api/v1/invitations/", {"roles": ["tenant_admin"]}).json_body["link"]
    monkeypatch.setattr(services, "_username_taken", _miss_once(services._username_taken))
    answer = Client().post(
        link.removeprefix("http://acme.localhost"),
        {
            "how": "sign-up",
            "new_username": "globex-auditor",
            "email": "someone@example.org",
            "new_password": "a long and fresh passphrase 77",
            "new_password_again": "a long and fresh passphrase 77",
        },
        HTTP_HOST="acme.localhost",
    )
    assert answer.status_code == 400
    assert b"That username is not available; choose another." in answer.content
    assert Invitation.objects.get(tenant__slug="acme").accepted_at is None
    assert User.objects.filter(username="globex-auditor").count() == 1

    monkeypatch.setattr(services, "_username_taken", _miss_once(services._username_taken))
    with pytest.raises(KcmError) as refused:
        services.user_create(username="acme-auditor", password="a long and fresh passphrase 77")
    assert (refused.value.status, refused.value.code) == (409, "user_exists")
