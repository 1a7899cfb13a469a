"""Issue 11, finding 2: separation of duties and explicit key-use grants.

Measured on a running instance: a tenant admin minted a key_user token and generated data keys
with it (200), and a tenant admin could change its own role. Now nobody grants a role they do
not hold, nobody changes their own roles or grant, key users use only the service keys (and
encryption contexts) their grant lists, and tokens live at most KCM_TOKEN_MAX_LIFETIME_DAYS.
"""

from __future__ import annotations

import importlib
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.core.errors import Conflict, Forbidden
from apps.core.roles import TENANT_ROLES, Role
from apps.core.tenancy import Principal
from apps.tenants import services
from apps.tenants.grants import KeyGrant, grant_check
from apps.tenants.models import ApiToken, Membership
from apps.tenants.tokens import api_token_create
from tests.audit.coveragekit import Log
from tests.conftest import PASSWORD, World
from tests.helpers import Api, assert_problem

ADMIN = ("acme", Role.TENANT_ADMIN)
CTX = {"app": "billing", "record": "invoice-42"}
OPERATIONS = ("generate-data-key", "decrypt-data-key", "encrypt", "decrypt", "rewrap")


def _keys(api: Any) -> None:
    """Service keys 'payments' and 'ledger' in acme (under an L1 'root')."""
    admin = api("acme", Role.KEY_ADMIN)
    assert admin.post("/api/v1/customer-keys/", {"name": "root"}).status_code == 201
    for name in ("payments", "ledger"):
        assert admin.post("/api/v1/service-keys/", {"name": name}).status_code == 201


def _member(
    world: Any, username: str, roles: list[str], grant: dict[str, Any] | None = None
) -> Api:
    """A signed-in member of acme holding `roles` (and `grant`), as an API client."""
    user = services.user_create(username=username, password=PASSWORD)
    services.membership_set(
        tenant=world.tenants["acme"],
        user=user,
        roles=roles,
        key_grant=KeyGrant.parse(grant) if grant else None,
    )
    client = Client(HTTP_HOST="acme.localhost")
    client.force_login(user)
    return Api("acme.localhost", client=client)


def _token(creator: Api, grant: Any = None, role: str = "key_user") -> Api:
    body: dict[str, Any] = {"name": "app", "role": role}
    if grant is not None:
        body["key_grant"] = grant
    created = creator.post("/api/v1/tokens/", body)
    assert created.status_code == 201, created.content
    return Api("acme.localhost", created.json_body["token"])


def _membership_id(username: str) -> int:
    return Membership.objects.get(user__username=username, tenant__slug="acme").pk


# --- nobody grants a role they do not hold --------------------------------------------------


def test_a_tenant_admin_cannot_mint_a_key_user_token(api: Any) -> None:
    _keys(api)
    refused = api(*ADMIN).post("/api/v1/tokens/", {"name": "sneaky", "role": "key_user"})
    assert_problem(refused, 403, "role_not_held")
    assert not ApiToken.objects.filter(name="sneaky").exists()


@pytest.mark.parametrize("role", ["key_admin", "auditor"])
def test_a_token_gets_only_a_role_its_creator_holds(api: Any, role: str) -> None:
    admin = api(*ADMIN)
    assert_problem(admin.post("/api/v1/tokens/", {"name": "x", "role": role}), 403, "role_not_held")
    assert admin.post("/api/v1/tokens/", {"name": "x", "role": "tenant_admin"}).status_code == 201


def test_a_key_user_tokens_grant_stays_within_its_creators(api: Any, world: Any) -> None:
    _keys(api)
    own = {"service_keys": ["payments"], "context": {"app": "billing"}}
    creator = _member(world, "lead", ["tenant_admin", "key_user"], own)
    default = creator.post("/api/v1/tokens/", {"name": "d", "role": "key_user"})
    assert default.status_code == 201 and default.json_body["key_grant"] == own
    narrower = {"service_keys": ["payments"], "context": {"app": "billing", "record": None}}
    made = creator.post("/api/v1/tokens/", {"name": "n", "role": "key_user", "key_grant": narrower})
    assert made.status_code == 201 and made.json_body["key_grant"] == narrower
    for broader in (
        {"service_keys": ["payments", "ledger"], "context": {"app": "billing"}},
        {"service_keys": ["*"], "context": {"app": "billing"}},
        {"service_keys": ["payments"]},
        {"service_keys": ["payments"], "context": {"app": None}},
    ):
        response = creator.post(
            "/api/v1/tokens/", {"name": "b", "role": "key_user", "key_grant": broader}
        )
        assert_problem(response, 403, "grant_exceeds_own")
    assert_problem(
        creator.post(
            "/api/v1/tokens/",
            {"name": "g", "role": "auditor", "key_grant": {"service_keys": ["payments"]}},
        ),
        400,
        "invalid_grant",
    )


@pytest.mark.parametrize(
    "grant",
    [
        {"service_keys": []},
        {"service_keys": ["*", "payments"]},
        {"service_keys": ["no spaces"]},
        {"service_keys": ["payments"], "context": {"app": 7}},
        {"service_keys": ["payments"], "extra": 1},
        ["payments"],
    ],
)
def test_a_malformed_grant_is_refused(api: Any, world: Any, grant: Any) -> None:
    creator = _member(world, "lead", ["tenant_admin", "key_user"], {"service_keys": ["*"]})
    response = creator.post(
        "/api/v1/tokens/", {"name": "m", "role": "key_user", "key_grant": grant}
    )
    assert_problem(response, 400, "invalid_grant")


def test_roles_given_to_a_member_must_be_held(api: Any, world: Any) -> None:
    admin = api(*ADMIN)
    auditor = _membership_id("acme-auditor")
    path = f"/api/v1/members/{auditor}/"
    assert_problem(
        admin.call("PATCH", path, {"roles": ["auditor", "key_admin"]}), 403, "role_not_held"
    )
    assert_problem(admin.call("PATCH", path, {"roles": ["key_user"]}), 403, "role_not_held")
    assert Membership.objects.get(pk=auditor).roles == ["auditor"]
    promoted = admin.call("PATCH", path, {"roles": ["auditor", "tenant_admin"]})
    assert promoted.status_code == 200 and promoted.json_body["roles"] == [
        "auditor",
        "tenant_admin",
    ]
    assert_problem(
        admin.post("/api/v1/invitations/", {"roles": ["key_user"]}),
        403,
        "role_not_held",
    )


def test_a_tenant_admin_takes_roles_away_and_the_grant_goes_with_key_user(
    api: Any, world: Any
) -> None:
    key_user = _membership_id("acme-key_user")
    demoted = api(*ADMIN).call("PATCH", f"/api/v1/members/{key_user}/", {"roles": ["tenant_admin"]})
    assert demoted.status_code == 200, demoted.content
    assert demoted.json_body["roles"] == ["tenant_admin"] and demoted.json_body["key_grant"] is None


def test_a_grant_given_to_a_member_stays_within_the_givers(api: Any, world: Any) -> None:
    lead = _member(world, "lead", ["tenant_admin", "key_user"], {"service_keys": ["payments"]})
    key_user = _membership_id("acme-key_user")
    path = f"/api/v1/members/{key_user}/"
    narrowed = lead.call(
        "PATCH", path, {"key_grant": {"service_keys": ["payments"], "context": {"app": None}}}
    )
    assert narrowed.status_code == 200, narrowed.content
    assert narrowed.json_body["key_grant"] == {
        "service_keys": ["payments"],
        "context": {"app": None},
    }
    for broader in ({"service_keys": ["*"]}, {"service_keys": ["payments", "ledger"]}):
        assert_problem(lead.call("PATCH", path, {"key_grant": broader}), 403, "grant_exceeds_own")
    # A tenant admin who is no key user can change nobody's grant.
    assert_problem(
        api(*ADMIN).call("PATCH", path, {"key_grant": {"service_keys": ["payments"]}}),
        403,
        "grant_exceeds_own",
    )


# --- nobody changes their own roles ---------------------------------------------------------


def test_nobody_changes_their_own_roles_or_grant(api: Any, world: Any) -> None:
    own = _membership_id("acme-tenant_admin")
    path = f"/api/v1/members/{own}/"
    client = Client(HTTP_HOST="acme.localhost")
    client.force_login(world.users[ADMIN])
    session = Api("acme.localhost", client=client)
    for body in ({"roles": ["tenant_admin", "auditor"]}, {"roles": ["auditor"]}):
        assert_problem(session.call("PATCH", path, body), 403, "cannot_change_own_role")
        # Nor through a token the same person created.
        assert_problem(api(*ADMIN).call("PATCH", path, body), 403, "cannot_change_own_role")
    lead = _member(world, "lead", ["tenant_admin", "key_user"], {"service_keys": ["payments"]})
    assert_problem(
        lead.call(
            "PATCH",
            f"/api/v1/members/{_membership_id('lead')}/",
            {"key_grant": {"service_keys": ["*"]}},
        ),
        403,
        "cannot_change_own_role",
    )
    assert Membership.objects.get(pk=own).roles == ["tenant_admin"]


def test_the_console_offers_only_held_roles_and_refuses_a_self_change(world: Any) -> None:
    client = Client(HTTP_HOST="acme.localhost")
    client.force_login(world.users[ADMIN])
    page = client.get("/tokens/").content.decode()
    assert 'value="tenant_admin"' in page and 'value="key_user"' not in page
    made = client.post("/tokens/", {"name": "c", "role": "key_user"})
    assert not ApiToken.objects.filter(name="c").exists(), made.status_code
    own = _membership_id("acme-tenant_admin")
    response = client.post(f"/members/{own}/role/", {f"m{own}-roles": []}, follow=True)
    assert "Nobody changes their own roles" in response.content.decode()
    assert Membership.objects.get(pk=own).roles == ["tenant_admin"]


def test_the_console_changes_another_members_roles_within_the_admins_own(world: Any) -> None:
    lead = services.user_create(username="lead", password=PASSWORD)
    services.membership_set(
        tenant=world.tenants["acme"],
        user=lead,
        roles=["tenant_admin", "key_user"],
        key_grant=KeyGrant.parse({"service_keys": ["payments", "ledger"]}),
    )
    client = Client(HTTP_HOST="acme.localhost")
    client.force_login(lead)
    auditor = _membership_id("acme-auditor")
    page = client.get("/members/").content.decode()
    assert f'name="m{auditor}-roles" value="key_user"' in page
    assert f'name="m{auditor}-roles" value="key_admin"' not in page
    client.post(
        f"/members/{auditor}/role/",
        {f"m{auditor}-roles": ["key_user"], f"m{auditor}-service_keys": "payments"},
    )
    changed = Membership.objects.get(pk=auditor)
    # auditor is not the admin's to give or take here: it is kept.
    assert changed.roles == ["auditor", "key_user"]
    assert changed.key_grant == {"service_keys": ["payments"], "context": {}}
    client.post(
        f"/members/{auditor}/role/",
        {f"m{auditor}-roles": ["key_user"], f"m{auditor}-service_keys": "*"},
        follow=True,
    )
    assert Membership.objects.get(pk=auditor).key_grant == changed.key_grant


# --- key use is explicit --------------------------------------------------------------------


def _items(user: Api, key: str, context: dict[str, str]) -> dict[str, dict[str, Any]]:
    """A valid body for each operation on `key`, made by a token that may use every key."""
    made = user.post(f"/api/v1/service-keys/{key}/generate-data-key/", {"context": context})
    sealed = user.post(
        f"/api/v1/service-keys/{key}/encrypt/", {"plaintext": "aGk=", "context": context}
    )
    assert made.status_code == sealed.status_code == 200
    return {
        "generate-data-key": {"context": context},
        "decrypt-data-key": {"ciphertext": made.json_body["ciphertext"], "context": context},
        "encrypt": {"plaintext": "aGk=", "context": context},
        "decrypt": {"ciphertext": sealed.json_body["ciphertext"], "context": context},
        "rewrap": {"ciphertext": sealed.json_body["ciphertext"], "context": context},
    }


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_key_user_uses_only_the_service_keys_its_grant_lists(
    api: Any, world: Any, operation: str
) -> None:
    _keys(api)
    everything = api("acme", Role.KEY_USER)
    ledger = _items(everything, "ledger", CTX)[operation]
    payments = _items(everything, "payments", CTX)[operation]
    lead = _member(world, "lead", ["tenant_admin", "key_user"], {"service_keys": ["*"]})
    narrow = _token(lead, {"service_keys": ["payments"]})
    assert narrow.post(f"/api/v1/service-keys/payments/{operation}/", payments).status_code == 200
    refused = narrow.post(f"/api/v1/service-keys/ledger/{operation}/", ledger)
    assert_problem(refused, 403, "key_not_granted")
    batch = narrow.post(f"/api/v1/service-keys/ledger/{operation}/batch/", {"items": [ledger]})
    assert_problem(batch, 403, "key_not_granted")
    # A key that does not exist is refused the same way: no oracle of which keys exist.
    assert_problem(
        narrow.post(f"/api/v1/service-keys/nosuch/{operation}/", ledger), 403, "key_not_granted"
    )


def test_a_key_user_without_a_grant_uses_no_key(api: Any) -> None:
    _keys(api)
    ApiToken.objects.filter(tenant__slug="acme", role="key_user").update(key_grant=None)
    refused = api("acme", Role.KEY_USER).post(
        "/api/v1/service-keys/payments/generate-data-key/", {}
    )
    assert_problem(refused, 403, "key_not_granted")


@pytest.mark.parametrize("operation", OPERATIONS)
def test_requests_must_carry_the_context_the_grant_requires(
    api: Any, world: Any, operation: str
) -> None:
    _keys(api)
    everything = api("acme", Role.KEY_USER)
    good = _items(everything, "payments", CTX)[operation]
    wrong = _items(everything, "payments", {"app": "payroll", "record": "x"})[operation]
    bare = _items(everything, "payments", {"app": "billing"})[operation]
    lead = _member(world, "lead", ["tenant_admin", "key_user"], {"service_keys": ["*"]})
    grant = {"service_keys": ["payments"], "context": {"app": "billing", "record": None}}
    user = _token(lead, grant)
    path = f"/api/v1/service-keys/payments/{operation}/"
    assert user.post(path, good).status_code == 200
    assert_problem(user.post(path, wrong), 403, "context_not_granted")
    assert_problem(user.post(path, bare), 403, "context_not_granted")
    batch = user.post(path + "batch/", {"items": [good, wrong, bare, good]})
    assert batch.status_code == 200, batch.content
    outcomes = [r["ok"] or r["error"]["code"] for r in batch.json_body["results"]]
    assert outcomes == [True, "context_not_granted", "context_not_granted", True]


def test_checking_a_grant_costs_no_query(api: Any, world: Any) -> None:
    _keys(api)
    lead = _member(world, "lead", ["tenant_admin", "key_user"], {"service_keys": ["*"]})
    everything = _token(lead, {"service_keys": ["*"]})
    narrow = _token(lead, {"service_keys": ["payments"], "context": {"app": None}})
    path = "/api/v1/service-keys/payments/generate-data-key/"
    counts = []
    for user in (everything, narrow):
        assert user.post(path, {"context": CTX}).status_code == 200  # warm: key, last_used_at
        with CaptureQueriesContext(connection) as queries:
            assert user.post(path, {"context": CTX}).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_me_shows_roles_and_grant(api: Any, world: Any) -> None:
    grant = {"service_keys": ["payments"], "context": {"app": None}}
    me = _member(world, "lead", ["key_user", "auditor"], grant).get("/api/v1/me/").json_body
    assert me["roles"] == ["auditor", "key_user"] and me["role"] == "auditor,key_user"
    assert me["key_grant"] == grant
    assert api(*ADMIN).get("/api/v1/me/").json_body["key_grant"] is None


# --- bootstrap, and token lifetime ----------------------------------------------------------


def test_an_operator_may_grant_any_role_only_where_no_tenant_admin_exists(world: Any) -> None:
    acme = world.tenants["acme"]
    operator = Principal(
        kind="user",
        id=world.users[("platform", Role.PLATFORM_OPERATOR)].pk,
        label="operator",
        roles=frozenset({Role.PLATFORM_OPERATOR}),
        tenant_id=world.tenants["platform"].pk,
    )
    everything = KeyGrant.everything()
    with pytest.raises(Forbidden) as refused:
        grant_check(actor=operator, tenant=acme, roles=["tenant_admin"], key_grant=None)
    assert refused.value.code == "role_not_held"
    Membership.objects.filter(tenant=acme, roles__contains=["tenant_admin"]).delete()
    grant_check(
        actor=operator, tenant=acme, roles=["tenant_admin", "key_user"], key_grant=everything
    )


def test_tokens_live_at_most_the_configured_lifetime(api: Any, settings: Any) -> None:
    settings.KCM_TOKEN_MAX_LIFETIME_DAYS = 30
    admin = api(*ADMIN)
    made = admin.post("/api/v1/tokens/", {"name": "t", "role": "tenant_admin"})
    expires = ApiToken.objects.get(pk=made.json_body["id"]).expires_at
    assert expires is not None
    assert abs(expires - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)
    too_long = (timezone.now() + timedelta(days=31)).isoformat()
    assert_problem(
        admin.post(
            "/api/v1/tokens/", {"name": "t", "role": "tenant_admin", "expires_at": too_long}
        ),
        400,
        "invalid_expiry",
    )


def test_grant_within_is_at_most_as_broad() -> None:
    def grant(keys: list[str], context: dict[str, str | None] | None = None) -> KeyGrant:
        return KeyGrant.parse({"service_keys": keys, "context": context or {}})

    wide = grant(["*"], {"app": None})
    assert grant(["a"], {"app": "x", "b": None}).within(wide)
    assert grant(["*"], {"app": "x"}).within(wide)
    assert not grant(["*"]).within(wide)
    assert not grant(["*"], {"app": "x"}).within(grant(["a"]))
    assert grant(["a"], {"app": "x"}).within(grant(["a", "b"], {"app": "x"}))
    assert not grant(["a"], {"app": None}).within(grant(["a"], {"app": "x"}))
    assert not grant(["a"], {"app": "y"}).within(grant(["a"], {"app": "x"}))
    assert KeyGrant.parse(grant(["b", "a"], {"k": None}).to_json()) == grant(
        ["a", "b"], {"k": None}
    )


def test_tokens_made_before_the_lifetime_limit_get_one_at_upgrade(
    world: Any, settings: Any
) -> None:
    """Migration 0009: an unrevoked token without an expiry (made before the setting existed)
    expires KCM_TOKEN_MAX_LIFETIME_DAYS after the upgrade; revoked ones are left alone."""
    from django.apps import apps as django_apps

    upgrade = importlib.import_module("apps.tenants.migrations.0009_tokens_expire")
    settings.KCM_TOKEN_MAX_LIFETIME_DAYS = 10
    tenant = world.tenants["acme"]
    old, _ = api_token_create(
        tenant=tenant, name="old", role="auditor", created_by_id=world.users[("acme", "auditor")].pk
    )
    gone, _ = api_token_create(
        tenant=tenant,
        name="gone",
        role="auditor",
        created_by_id=world.users[("acme", "auditor")].pk,
    )
    ApiToken.objects.filter(pk__in=[old.pk, gone.pk]).update(expires_at=None)
    ApiToken.objects.filter(pk=gone.pk).update(revoked_at=timezone.now())

    upgrade.tokens_expire(django_apps, None)

    old.refresh_from_db()
    gone.refresh_from_db()
    assert old.expires_at is not None
    assert abs(old.expires_at - (timezone.now() + timedelta(days=10))) < timedelta(minutes=1)
    assert gone.expires_at is None


def test_the_audit_log_records_every_role_a_member_acts_with(world: Any) -> None:
    """A member holding all four tenant roles acts with "auditor,key_admin,key_user,
    tenant_admin" (39 characters): the audit log keeps all of it, not the first 32."""
    every = _member(world, "everything", list(TENANT_ROLES), {"service_keys": ["*"]})
    log = Log("t_acme")
    assert every.post("/api/v1/customer-keys/", {"name": "all-roles"}).status_code == 201
    (event,) = [e for e in log.new() if e.action == "key.create"]
    assert event.role == ",".join(sorted(TENANT_ROLES))
    assert event.actor == "user:everything"


def test_a_members_tokens_hold_no_more_than_the_member(api: Any, world: World) -> None:
    """Tokens are the member's power in another form: when a tenant admin takes a role or a
    grant away, or removes the member, the member's tokens that held it stop working."""
    _keys(api)
    admin = api(*ADMIN)
    lead = _member(
        world, "lead", ["tenant_admin", "key_admin", "key_user"], {"service_keys": ["*"]}
    )
    use_all = _token(lead)  # key_user, grant: every key (the creator's)
    use_payments = _token(lead, {"service_keys": ["payments"]})
    manage = _token(lead, role="key_admin")
    generate = "/api/v1/service-keys/{}/generate-data-key/"
    for token in (use_all, use_payments):
        assert token.post(generate.format("payments"), {}).status_code == 200

    path = f"/api/v1/members/{_membership_id('lead')}/"
    narrowed = admin.call("PATCH", path, {"key_grant": {"service_keys": ["payments"]}})
    assert narrowed.status_code == 403  # a tenant admin holding no grant gives none ...
    # ... so the narrowing is done by a key user whose grant covers it.
    keeper = _member(world, "keeper", ["tenant_admin", "key_user"], {"service_keys": ["*"]})
    narrowed = keeper.call("PATCH", path, {"key_grant": {"service_keys": ["payments"]}})
    assert narrowed.status_code == 200, narrowed.content
    assert_problem(use_all.post(generate.format("payments"), {}), 401, "invalid_token")
    assert use_payments.post(generate.format("payments"), {}).status_code == 200
    assert manage.get("/api/v1/keys/").status_code == 200

    demoted = keeper.call("PATCH", path, {"roles": ["tenant_admin", "key_user"]})
    assert demoted.status_code == 200, demoted.content
    assert_problem(manage.get("/api/v1/keys/"), 401, "invalid_token")
    assert use_payments.post(generate.format("payments"), {}).status_code == 200

    log = Log("t_acme")
    removed = admin.call("DELETE", path)
    assert removed.status_code == 204, removed.content
    assert_problem(use_payments.post(generate.format("payments"), {}), 401, "invalid_token")
    revocations = ApiToken.objects.filter(created_by__username="lead", revoked_at__isnull=False)
    assert revocations.count() == 3
    # Each revocation is in the audit event of the change that caused it.
    (event,) = [e for e in log.new() if e.action == "member.remove"]
    assert event.details["revoked_tokens"] == [str(use_payments.token).split("_")[1]]


def test_a_token_made_by_a_token_belongs_to_its_person_and_dies_with_it(
    api: Any, world: World
) -> None:
    """A leaked admin token must not mint a child that outlives it: the child belongs to the
    parent's person, expires no later than the parent, and is revoked with it."""
    admin = api(*ADMIN)
    parent = _token(admin, role="tenant_admin")
    child_made = parent.post("/api/v1/tokens/", {"name": "child", "role": "tenant_admin"})
    assert child_made.status_code == 201, child_made.content
    child = Api("acme.localhost", child_made.json_body["token"])
    grandchild_made = child.post("/api/v1/tokens/", {"name": "grandchild", "role": "tenant_admin"})
    grandchild = Api("acme.localhost", grandchild_made.json_body["token"])
    rows = {t.name: t for t in ApiToken.objects.filter(name__in=["app", "child", "grandchild"])}
    person = world.users[ADMIN].pk
    assert {t.created_by_id for t in rows.values()} == {person}
    assert rows["child"].parent_id == rows["app"].pk
    assert rows["grandchild"].expires_at <= rows["app"].expires_at  # type: ignore[operator]
    # The child cannot change its person's roles either (it acts for that person).
    own = f"/api/v1/members/{_membership_id('acme-tenant_admin')}/"
    assert_problem(
        child.call("PATCH", own, {"roles": ["tenant_admin", "auditor"]}),
        403,
        "cannot_change_own_role",
    )
    revoked = admin.call("DELETE", f"/api/v1/tokens/{rows['app'].pk}/")
    assert revoked.status_code in (200, 204), revoked.content
    for token in (parent, child, grandchild):
        assert_problem(token.get("/api/v1/me/"), 401, "invalid_token")


def test_a_tenant_never_loses_its_last_tenant_admin(api: Any, world: World) -> None:
    """With no tenant admin left, a platform operator could give any role again (the
    bootstrap), so no change may leave a tenant without one. Through the API only a race can
    try (nobody changes or removes themselves; two admins removing each other at once): the
    service refuses whoever would remove the last, under a lock on the tenant."""
    acme = world.tenants["acme"]
    only = Membership.objects.get(user=world.users[ADMIN], tenant=acme)
    system = Principal(
        kind="system", id=0, label="test", roles=frozenset({Role.TENANT_ADMIN}), tenant_id=acme.pk
    )
    with pytest.raises(Conflict) as removing:
        services.membership_remove(tenant=acme, membership_id=only.pk, acting=system)
    assert removing.value.code == "last_tenant_admin"
    with pytest.raises(Conflict) as demoting:
        services.member_update(tenant=acme, membership_id=only.pk, actor=system, roles=["auditor"])
    assert demoting.value.code == "last_tenant_admin"
    assert Membership.objects.get(pk=only.pk).roles == ["tenant_admin"]
    # With a second admin, either may remove the other, and then that one is the last.
    second = _member(world, "second-admin", ["tenant_admin"])
    assert second.call("DELETE", f"/api/v1/members/{only.pk}/").status_code == 204
    with pytest.raises(Conflict):
        services.membership_remove(
            tenant=acme, membership_id=_membership_id("second-admin"), acting=system
        )
