"""API tokens: shown once, stored hashed, bound to one tenant and role, expire and revoke.
A tenant admin holds one role here, so its tokens and members get that role (nobody grants a
role they do not hold: tests/security/test_separation_of_duties.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.test import Client
from django.utils import timezone

from apps.core.roles import Role
from apps.tenants.access import digest_secret
from apps.tenants.models import ApiToken
from tests.helpers import Api, assert_problem

ADMIN = ("acme", Role.TENANT_ADMIN)


def test_a_new_token_is_shown_once_and_stored_hashed(api: Any) -> None:
    response = api(*ADMIN).post("/api/v1/tokens/", {"name": "ci", "role": "tenant_admin"})
    assert response.status_code == 201
    plaintext = response.json_body["token"]
    stored = ApiToken.objects.get(pk=response.json_body["id"])
    assert plaintext not in (stored.digest, stored.prefix)
    assert stored.digest == digest_secret(plaintext.split("_", 2)[2])
    listed = api(*ADMIN).get("/api/v1/tokens/").json_body["results"]
    assert all("token" not in item for item in listed)
    me = Api("acme.localhost", plaintext).get("/api/v1/me/")
    assert me.status_code == 200 and me.json_body["role"] == "tenant_admin"


def test_a_revoked_token_stops_working(api: Any) -> None:
    created = (
        api(*ADMIN).post("/api/v1/tokens/", {"name": "temp", "role": "tenant_admin"}).json_body
    )
    assert api(*ADMIN).call("DELETE", f"/api/v1/tokens/{created['id']}/").status_code == 204
    assert_problem(Api("acme.localhost", created["token"]).get("/api/v1/me/"), 401, "invalid_token")


def test_an_expired_token_stops_working(api: Any) -> None:
    created = (
        api(*ADMIN)
        .post(
            "/api/v1/tokens/",
            {
                "name": "short",
                "role": "tenant_admin",
                "expires_at": (timezone.now() + timedelta(hours=1)).isoformat(),
            },
        )
        .json_body
    )
    client = Api("acme.localhost", created["token"])
    assert client.get("/api/v1/me/").status_code == 200
    ApiToken.objects.filter(pk=created["id"]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert_problem(client.get("/api/v1/me/"), 401, "invalid_token")


def test_it_refuses_an_expiry_in_the_past_and_a_platform_role(api: Any) -> None:
    past = (timezone.now() - timedelta(days=1)).isoformat()
    assert_problem(
        api(*ADMIN).post(
            "/api/v1/tokens/", {"name": "x", "role": "tenant_admin", "expires_at": past}
        ),
        400,
        "invalid_expiry",
    )
    assert_problem(
        api(*ADMIN).post("/api/v1/tokens/", {"name": "x", "role": "platform_operator"}),
        400,
        "invalid_role",
    )


def test_a_tampered_or_unknown_token_is_refused(world: Any) -> None:
    good = world.tokens[ADMIN]
    for bad in (good[:-1] + ("A" if good[-1] != "A" else "B"), "kcm_000000000000_nope", "garbage"):
        assert_problem(Api("acme.localhost", bad).get("/api/v1/me/"), 401, "invalid_token")


def test_a_foreign_tokens_id_cannot_be_revoked(api: Any) -> None:
    created = (
        api("globex", Role.TENANT_ADMIN)
        .post("/api/v1/tokens/", {"name": "g", "role": "tenant_admin"})
        .json_body
    )
    assert_problem(
        api(*ADMIN).call("DELETE", f"/api/v1/tokens/{created['id']}/"), 404, "token_not_found"
    )
    assert ApiToken.objects.get(pk=created["id"]).revoked_at is None


def test_members_join_by_invitation_and_can_be_changed_and_removed(api: Any) -> None:
    admin = api(*ADMIN)
    link = admin.post("/api/v1/invitations/", {"roles": ["tenant_admin"]}).json_body["link"]
    path = link.removeprefix("http://acme.localhost")

    def sign_up(username: str, password: str) -> Any:
        return Client().post(
            path,
            {
                "how": "sign-up",
                "new_username": username,
                "email": f"{username}@acme.example",
                "new_password": password,
                "new_password_again": password,
            },
            HTTP_HOST="acme.localhost",
        )

    weak = sign_up("weak", "123")
    assert weak.status_code == 400 and b"too short" in weak.content
    assert sign_up("newbie", "a long enough passphrase 9").status_code == 302
    listed = admin.get("/api/v1/members/").json_body["results"]
    added = next(m for m in listed if m["username"] == "newbie")
    assert added["roles"] == ["tenant_admin"] and added["email"] == "newbie@acme.example"
    member_id = added["id"]
    auditor_id = next(m["id"] for m in listed if m["username"] == "acme-auditor")
    changed = admin.call(
        "PATCH", f"/api/v1/members/{auditor_id}/", {"roles": ["auditor", "tenant_admin"]}
    )
    assert changed.json_body["roles"] == ["auditor", "tenant_admin"]
    assert admin.call("DELETE", f"/api/v1/members/{member_id}/").status_code == 204
    assert_problem(admin.get(f"/api/v1/members/{member_id}/"), 404, "member_not_found")
