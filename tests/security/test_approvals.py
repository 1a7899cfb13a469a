"""Four-eyes approvals cannot be short-cut: the requester never approves (not even through a
second token of their own), concurrent approvals run the action exactly once, and an expired
request never runs."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import connection
from django.utils import timezone
from django_tenants.utils import schema_context, tenant_context

from apps.approvals import services
from apps.approvals.models import ApprovalPolicy, ApprovalRequest
from apps.approvals.tasks import approvals_expire_all
from apps.audit import services as audit
from apps.audit.models import AuditEvent
from apps.audit.sealer import seal_here
from apps.core.errors import KcmError
from apps.core.roles import Role
from apps.core.tenancy import Principal
from apps.tenants import services as tenants
from apps.tenants.models import Membership, Tenant
from apps.tenants.tokens import api_token_create
from tests.approvals.conftest import add_key_admin
from tests.conftest import PASSWORD, World
from tests.helpers import Api, assert_problem, host_of


def _l1(api: Any) -> tuple[Api, str]:
    requester = api("acme", Role.KEY_ADMIN)
    made = requester.post("/api/v1/customer-keys/", {"name": "root"})
    assert made.status_code == 201, made.content
    return requester, made.json_body["id"]


def test_the_requesters_own_second_token_cannot_approve(api: Any, world: World) -> None:
    requester, l1 = _l1(api)
    for n in range(2):
        add_key_admin(world, "acme", f"other-{n}")
    tenant_admin = api("acme", Role.TENANT_ADMIN)
    policy = {"actions": ["key.disable"], "required": 2}
    assert tenant_admin.call("PUT", "/api/v1/approvals/policy/", policy).status_code == 200
    asked = requester.post(f"/api/v1/keys/{l1}/disable/", {}).json_body
    user = world.users[("acme", Role.KEY_ADMIN)]
    _, second = api_token_create(
        tenant=world.tenants["acme"], name="mine too", role=Role.KEY_ADMIN, created_by_id=user.pk
    )
    response = Api(host_of("acme"), second).post(f"/api/v1/approvals/{asked['id']}/approve/", {})
    assert_problem(response, 403, "requester_cannot_approve")


def test_the_gate_also_holds_the_console_buttons(api: Any, world: World) -> None:
    from django.test import Client

    requester, l1 = _l1(api)
    for n in range(2):
        add_key_admin(world, "acme", f"other-{n}")
    policy = {"actions": ["key.disable", "key.rotate"], "required": 2}
    assert (
        api("acme", Role.TENANT_ADMIN).call("PUT", "/api/v1/approvals/policy/", policy).status_code
        == 200
    )
    client = Client(HTTP_HOST="acme.localhost")
    client.force_login(world.users[("acme", Role.KEY_ADMIN)])
    client.post(f"/keys/{l1}/disable/")
    client.post(f"/keys/{l1}/rotate/")
    with schema_context("t_acme"):
        assert set(ApprovalRequest.objects.values_list("action", "state")) == {
            ("key.disable", "PENDING"),
            ("key.rotate", "PENDING"),
        }
    got = requester.get(f"/api/v1/keys/{l1}/material/").json_body
    assert len(got["versions"]) == 1
    approver = Client(HTTP_HOST="acme.localhost")
    approver.force_login(User.objects.get(username="other-0"))
    page = approver.get("/approvals/")
    assert page.status_code == 200
    assert b'data-testid="approvals-pending-count">2<' in page.content
    assert page.content.count(b">Approve</button>") == 2


# --- concurrency: of three approvals at once, exactly one runs the action ---------------------


def _in_thread(work: Any) -> tuple[threading.Thread, list[Any]]:
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(work())
        except BaseException as exc:  # reported by the caller
            box.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


def _lock_waiters() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted")
        return int(cursor.fetchone()[0])


def test_two_of_three_concurrent_approvals_execute_exactly_once(world: World) -> None:
    """Committed rows and separate connections. Three approvers wait on a lock held on the
    request, then race when it is released: two approve, the one that reaches 2 runs the
    change (here a change of the policy itself), the third finds it decided."""
    acme = world.tenants["acme"]
    names = [f"racer-{n}" for n in range(3)]
    requester = world.users[("acme", Role.TENANT_ADMIN)]  # the policy is a tenant admin's

    def principal(user: User, role: str = Role.KEY_ADMIN) -> Principal:
        return Principal(
            kind="user",
            id=user.pk,
            label=user.username,
            roles=frozenset({role}),
            tenant_id=acme.pk,
            user_id=user.pk,
        )

    def setup() -> str:
        for name in names:
            user = tenants.user_create(username=name, password=PASSWORD)
            tenants.membership_set(tenant=acme, user=user, roles=[Role.KEY_ADMIN])
        with tenant_context(Tenant.objects.get(pk=acme.pk)):
            ApprovalPolicy.objects.create(actions=["approval.policy.set"], required=2)
            params = {
                "actions": ["approval.policy.set", "key.rotate"],
                "required": 3,
                "approver_role": Role.KEY_ADMIN,
                "expiry_days": 3,
                "requester": requester.pk,
            }
            return str(
                services.request_create(
                    principal=principal(requester, Role.TENANT_ADMIN),
                    action="approval.policy.set",
                    target="policy",
                    params=params,
                    required=2,
                    approver_role=Role.KEY_ADMIN,
                    expiry_days=7,
                ).pk
            )

    outcomes: dict[str, str] = {}

    def approve(request_id: str, name: str) -> None:
        with tenant_context(Tenant.objects.get(pk=acme.pk)):
            try:
                row = services.request_approve(
                    request_id=request_id, principal=principal(User.objects.get(username=name))
                )
                outcomes[name] = row.state
            except KcmError as exc:
                outcomes[name] = exc.code

    release, holding = threading.Event(), threading.Event()

    def hold(request_id: str) -> None:
        from django.db import transaction

        with tenant_context(Tenant.objects.get(pk=acme.pk)), transaction.atomic():
            ApprovalRequest.objects.select_for_update().get(pk=request_id)
            holding.set()
            release.wait(20)

    thread, box = _in_thread(setup)
    thread.join()
    request_id = box[0]
    assert isinstance(request_id, str), box
    try:
        holder, _ = _in_thread(lambda: hold(request_id))
        assert holding.wait(10)
        racers = [_in_thread(lambda n=name: approve(request_id, n))[0] for name in names]
        deadline = time.monotonic() + 10
        while _lock_waiters() < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _lock_waiters() >= 3, "the approvals should wait on the request's lock"
        release.set()
        holder.join()
        for racer in racers:
            racer.join()
        assert sorted(outcomes.values()) == ["EXECUTED", "PENDING", "approval_not_pending"], (
            outcomes
        )

        def check() -> tuple[int, int, list[str], bool]:
            with tenant_context(Tenant.objects.get(pk=acme.pk)):
                seal_here()
                since = AuditEvent.objects.filter(action="approval.request", target=request_id)
                first = since.get().seq
                later = AuditEvent.objects.filter(seq__gt=first)
                return (
                    later.filter(action="approval.execute").count(),
                    later.filter(action="approval.policy.set").count(),
                    list(ApprovalPolicy.objects.get().actions),
                    audit.audit_verify()["ok"],
                )

        thread, box = _in_thread(check)
        thread.join()
        assert box[0] == (1, 1, ["approval.policy.set", "key.rotate"], True), box
    finally:
        release.set()

        def cleanup() -> None:
            with tenant_context(Tenant.objects.get(pk=acme.pk)):
                ApprovalRequest.objects.all().delete()
                ApprovalPolicy.objects.all().delete()
            Membership.objects.filter(user__username__in=names).delete()
            User.objects.filter(username__in=names).delete()

        thread, _ = _in_thread(cleanup)
        thread.join()


def test_an_expired_request_is_marked_so_and_never_runs(api: Any, world: World) -> None:
    requester, l1 = _l1(api)
    others = [add_key_admin(world, "acme", f"other-{n}") for n in range(2)]
    policy = {"actions": ["key.disable"], "required": 1, "expiry_days": 1}
    assert (
        api("acme", Role.TENANT_ADMIN).call("PUT", "/api/v1/approvals/policy/", policy).status_code
        == 200
    )
    asked = requester.post(f"/api/v1/keys/{l1}/disable/", {}).json_body
    with schema_context("t_acme"):
        ApprovalRequest.objects.filter(pk=asked["id"]).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )
    # The beat task marks it expired (audited); the approver who comes later is told.
    assert approvals_expire_all() == 1
    got = requester.get(f"/api/v1/approvals/{asked['id']}/").json_body
    assert got["state"] == "EXPIRED"
    assert_problem(
        others[0].api.post(f"/api/v1/approvals/{asked['id']}/approve/", {}),
        409,
        "approval_not_pending",
    )
    assert requester.get(f"/api/v1/keys/{l1}/material/").status_code == 200
    with schema_context("t_acme"):
        from apps.keychain.models import CustomerKey

        assert CustomerKey.objects.get(pk=l1).state == "ENABLED"


def test_approvals_never_act_for_a_requester_who_lost_the_role(api: Any, world: World) -> None:
    """A key admin asks to disable an L1 and is then demoted: the approvals that arrive
    afterwards do not act in their name; the request ends FAILED, the key stays enabled."""
    requester, l1 = _l1(api)
    approvers = [add_key_admin(world, "acme", f"approver-{n}") for n in range(2)]
    tenant_admin = api("acme", Role.TENANT_ADMIN)
    policy = {"actions": ["key.disable"], "required": 2}
    assert tenant_admin.call("PUT", "/api/v1/approvals/policy/", policy).status_code == 200
    asked = requester.post(f"/api/v1/keys/{l1}/disable/", {})
    assert asked.status_code == 202, asked.content
    Membership.objects.filter(
        user=world.users[("acme", Role.KEY_ADMIN)], tenant=world.tenants["acme"]
    ).update(roles=[Role.AUDITOR])
    for approver in approvers:
        approver.api.post(f"/api/v1/approvals/{asked.json_body['id']}/approve/", {})
    with tenant_context(world.tenants["acme"]):
        request = ApprovalRequest.objects.get(pk=asked.json_body["id"])
    assert (request.state, request.error_code) == ("FAILED", "requester_lost_role")
    key = api("acme", Role.AUDITOR).get("/api/v1/keys/").json_body
    assert "ENABLED" in str(key) and "DISABLED" not in str(key)


def test_an_approval_lapses_when_its_approver_loses_the_role(api: Any, world: World) -> None:
    """An approver approves and is then demoted (or removed): their approval no longer counts,
    so one more approval does not reach two; a third, still standing, does."""
    requester, l1 = _l1(api)
    approvers = [add_key_admin(world, "acme", f"approver-{n}") for n in range(3)]
    tenant_admin = api("acme", Role.TENANT_ADMIN)
    policy = {"actions": ["key.disable"], "required": 2}
    assert tenant_admin.call("PUT", "/api/v1/approvals/policy/", policy).status_code == 200
    asked = requester.post(f"/api/v1/keys/{l1}/disable/", {})
    assert asked.status_code == 202, asked.content
    approve = f"/api/v1/approvals/{asked.json_body['id']}/approve/"
    assert approvers[0].api.post(approve, {}).status_code == 200
    Membership.objects.filter(user=approvers[0].user, tenant=world.tenants["acme"]).update(
        roles=[Role.AUDITOR]
    )
    assert approvers[1].api.post(approve, {}).status_code == 200

    def state() -> str:
        with tenant_context(world.tenants["acme"]):
            return ApprovalRequest.objects.get(pk=asked.json_body["id"]).state

    assert state() == "PENDING"
    keys = str(api("acme", Role.AUDITOR).get("/api/v1/keys/").json_body)
    assert "ENABLED" in keys and "DISABLED" not in keys
    assert approvers[2].api.post(approve, {}).status_code == 200
    assert state() == "EXECUTED"
    assert "DISABLED" in str(api("acme", Role.AUDITOR).get("/api/v1/keys/").json_body)
