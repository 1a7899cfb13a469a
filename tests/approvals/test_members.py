"""Granting key_admin or tenant_admin (`member.role_change`): with the action in the policy, the
change waits for approvers, then runs once, exactly as stored, as the requester, through the
members service; lesser changes run at once; a requester who lost the power acts no more."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.test import Client
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.approvals.models import ApprovalRequest
from apps.audit import services as audit
from apps.audit.models import AuditEvent
from apps.audit.sealer import seal_here
from apps.core.roles import Role
from apps.tenants import services
from apps.tenants.models import Membership
from tests.approvals.conftest import Setup
from tests.conftest import World
from tests.helpers import assert_problem


def _member(world: World, role: str) -> Membership:
    return Membership.objects.get(user=world.users[("acme", role)], tenant=world.tenants["acme"])


def _approve_all(setup: Setup, request_id: str, count: int = 2) -> Any:
    for approver in setup.approvers[:count]:
        done = approver.api.post(f"/api/v1/approvals/{request_id}/approve/", {})
    return done


def test_making_a_member_tenant_admin_waits_for_approval_then_runs_as_stored(
    setup: Setup, world: World
) -> None:
    assert setup.policy(actions=["member.role_change"]).status_code == 200
    auditor = _member(world, Role.AUDITOR)
    path = f"/api/v1/members/{auditor.pk}/"
    asked = setup.tenant_admin.call("PATCH", path, {"roles": ["auditor", "tenant_admin"]})
    assert asked.status_code == 202, asked.content
    body = asked.json_body
    assert (body["action"], body["target"], body["state"]) == (
        "member.role_change",
        str(auditor.pk),
        "PENDING",
    )
    assert body["params"] == {"roles": ["auditor", "tenant_admin"]}
    assert _member(world, Role.AUDITOR).roles == ["auditor"]  # nothing changed yet
    # One pending change per member; the requester never approves their own.
    again = setup.tenant_admin.call("PATCH", path, {"roles": ["tenant_admin"]})
    assert_problem(again, 409, "approval_pending")
    request_path = f"/api/v1/approvals/{body['id']}/"
    assert_problem(
        setup.tenant_admin.post(request_path + "approve/", {}), 403, "requester_cannot_approve"
    )

    first = setup.approvers[0].api.post(request_path + "approve/", {})
    assert first.json_body["state"] == "PENDING"
    assert _member(world, Role.AUDITOR).roles == ["auditor"]
    done = setup.approvers[1].api.post(request_path + "approve/", {})
    assert done.json_body["state"] == "EXECUTED", done.json_body
    assert done.json_body["result"]["roles"] == ["auditor", "tenant_admin"]
    assert _member(world, Role.AUDITOR).roles == ["auditor", "tenant_admin"]
    assert_problem(
        setup.approvers[2].api.post(request_path + "approve/", {}), 409, "approval_not_pending"
    )

    with schema_context("t_acme"):
        seal_here()
        # (Other tests' committed events may be in acme's log: this member's change only.)
        change = AuditEvent.objects.get(
            action="member.role_change", outcome="success", target=auditor.user.username
        )
        requested = AuditEvent.objects.get(action="approval.request", target=body["id"])
        assert change.actor == requested.actor == body["requested_by"]
        assert change.details["to"] == ["auditor", "tenant_admin"]
        steps = list(
            AuditEvent.objects.filter(target=body["id"], outcome="success")
            .order_by("seq")
            .values_list("action", flat=True)
        )
        assert steps == [
            "approval.request",
            "approval.approve",
            "approval.approve",
            "approval.execute",
        ]
        assert audit.audit_verify()["ok"]


def test_a_change_granting_neither_admin_role_runs_at_once(setup: Setup, world: World) -> None:
    assert setup.policy(actions=["member.role_change"]).status_code == 200
    auditor = _member(world, Role.AUDITOR)
    same = setup.tenant_admin.call(
        "PATCH", f"/api/v1/members/{auditor.pk}/", {"roles": ["auditor"]}
    )
    assert same.status_code == 200, same.content
    # Taking an admin role away is not granting one either.
    services.membership_set(
        tenant=world.tenants["acme"],
        user=world.users[("acme", Role.AUDITOR)],
        roles=[Role.AUDITOR, Role.KEY_ADMIN],
    )
    taken = setup.tenant_admin.call(
        "PATCH", f"/api/v1/members/{auditor.pk}/", {"roles": ["auditor"]}
    )
    assert taken.status_code == 200 and taken.json_body["roles"] == ["auditor"]
    assert setup.auditor.get("/api/v1/approvals/").json_body["results"] == []


def test_a_change_the_service_would_refuse_is_refused_when_asked(
    setup: Setup, world: World
) -> None:
    assert setup.policy(actions=["member.role_change"]).status_code == 200
    own = _member(world, Role.TENANT_ADMIN)
    mine = setup.tenant_admin.call(
        "PATCH", f"/api/v1/members/{own.pk}/", {"roles": ["tenant_admin", "key_admin"]}
    )
    assert_problem(mine, 403, "cannot_change_own_role")
    # A tenant admin's token holds tenant_admin only: it cannot hand out key_admin.
    auditor = _member(world, Role.AUDITOR)
    not_held = setup.tenant_admin.call(
        "PATCH", f"/api/v1/members/{auditor.pk}/", {"roles": ["key_admin"]}
    )
    assert_problem(not_held, 403, "role_not_held")
    missing = setup.tenant_admin.call(
        "PATCH", "/api/v1/members/999999/", {"roles": ["tenant_admin"]}
    )
    assert_problem(missing, 404, "member_not_found")
    assert setup.auditor.get("/api/v1/approvals/").json_body["results"] == []
    assert _member(world, Role.AUDITOR).roles == ["auditor"]


def test_a_requester_who_lost_tenant_admin_grants_nothing_and_may_retry_once_restored(
    setup: Setup, world: World
) -> None:
    assert setup.policy(actions=["member.role_change"]).status_code == 200
    auditor = _member(world, Role.AUDITOR)
    asked = setup.tenant_admin.call(
        "PATCH", f"/api/v1/members/{auditor.pk}/", {"roles": ["tenant_admin"]}
    ).json_body
    admin = _member(world, Role.TENANT_ADMIN)
    Membership.objects.filter(pk=admin.pk).update(roles=[Role.AUDITOR])  # demoted meanwhile
    done = _approve_all(setup, asked["id"])
    assert (done.json_body["state"], done.json_body["error_code"]) == (
        "FAILED",
        "requester_lost_role",
    )
    assert _member(world, Role.AUDITOR).roles == ["auditor"]
    # Only the requester runs it again; while they lack the role it fails again.
    Membership.objects.filter(pk=admin.pk).update(roles=[Role.TENANT_ADMIN])
    execute = f"/api/v1/approvals/{asked['id']}/execute/"
    assert_problem(setup.approvers[0].api.post(execute, {}), 403, "not_the_requester")
    again = setup.tenant_admin.post(execute, {})
    assert again.status_code == 200, again.content
    assert again.json_body["state"] == "EXECUTED" and again.json_body["error_code"] == ""
    assert _member(world, Role.AUDITOR).roles == ["tenant_admin"]
    assert_problem(setup.tenant_admin.post(execute, {}), 409, "approval_not_pending")


def test_granting_key_admin_from_the_console_waits_for_approval(setup: Setup, world: World) -> None:
    assert setup.policy(actions=["member.role_change"]).status_code == 200
    acme = world.tenants["acme"]
    admin = world.users[("acme", Role.TENANT_ADMIN)]
    # In the console a member's roles are all their session's: this one may grant key_admin.
    services.membership_set(tenant=acme, user=admin, roles=[Role.TENANT_ADMIN, Role.KEY_ADMIN])
    client = Client(HTTP_HOST="acme.localhost")
    client.force_login(admin)
    auditor = _member(world, Role.AUDITOR)
    page = client.post(
        f"/members/{auditor.pk}/role/",
        {f"m{auditor.pk}-roles": ["key_admin"]},  # auditor is kept
        follow=True,
    )
    assert b"waits on the Approvals page" in page.content
    assert _member(world, Role.AUDITOR).roles == ["auditor"]
    with schema_context("t_acme"):
        request = ApprovalRequest.objects.get(action="member.role_change")
        assert (request.target, request.params) == (
            str(auditor.pk),
            {"roles": ["auditor", "key_admin"]},
        )
    done = _approve_all(setup, str(request.pk))
    assert done.json_body["state"] == "EXECUTED", done.json_body
    assert _member(world, Role.AUDITOR).roles == ["auditor", "key_admin"]


def test_an_expired_promotion_never_runs(setup: Setup, world: World) -> None:
    assert setup.policy(actions=["member.role_change"]).status_code == 200
    auditor = _member(world, Role.AUDITOR)
    asked = setup.tenant_admin.call(
        "PATCH", f"/api/v1/members/{auditor.pk}/", {"roles": ["tenant_admin"]}
    ).json_body
    assert setup.approvers[0].api.post(f"/api/v1/approvals/{asked['id']}/approve/", {})
    with schema_context("t_acme"):
        ApprovalRequest.objects.filter(pk=asked["id"]).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )
    late = setup.approvers[1].api.post(f"/api/v1/approvals/{asked['id']}/approve/", {})
    assert_problem(late, 409, "approval_expired")
    assert _member(world, Role.AUDITOR).roles == ["auditor"]
    with schema_context("t_acme"):
        seal_here()
        assert AuditEvent.objects.filter(action="approval.expire", target=asked["id"]).count() == 1
        assert not AuditEvent.objects.filter(
            action="member.role_change", outcome="success", target=auditor.user.username
        )
