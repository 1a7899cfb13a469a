"""Terminating a tenant under KCM_PLATFORM_APPROVALS_REQUIRED: the platform's requests live in
the public schema, are decided by other platform operators, run once as the requester, expire,
and every step is on the platform's audit chain."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.approvals.platform.models import PlatformApprovalRequest
from apps.approvals.tasks import approvals_expire_all
from apps.audit import services as audit
from apps.audit.models import AuditEvent
from apps.audit.sealer import seal_here
from apps.core.roles import Role
from apps.tenants import services
from apps.tenants.models import Membership, Tenant, TenantStatus
from apps.tenants.tokens import api_token_create
from tests.conftest import PASSWORD, World
from tests.helpers import Api, assert_problem

APPROVALS = "/api/v1/platform/approvals/"


def add_operator(world: World, name: str) -> tuple[User, Api]:
    platform = world.tenants["platform"]
    user = services.user_create(username=name, password=PASSWORD)
    services.membership_set(tenant=platform, user=user, roles=[Role.PLATFORM_OPERATOR])
    _, token = api_token_create(
        tenant=platform, name=f"{name} token", role=Role.PLATFORM_OPERATOR, created_by_id=user.pk
    )
    return user, Api("localhost", token)


@pytest.fixture
def operators(world: World, settings: Any) -> list[tuple[User, Api]]:
    settings.KCM_PLATFORM_APPROVALS_REQUIRED = 2
    return [add_operator(world, f"operator-{n}") for n in range(3)]


def _doomed() -> Tenant:
    return services.tenant_create(slug="doomed", name="Doomed")


def _status(slug: str) -> str:
    return Tenant.objects.get(slug=slug).status


def test_by_default_a_termination_runs_at_once(api: Any, world: World) -> None:
    _doomed()
    ops = api("platform", Role.PLATFORM_OPERATOR)
    assert ops.get(APPROVALS + "policy/").json_body["actions"] == []
    done = ops.post("/api/v1/platform/tenants/doomed/terminate/", {"reason": "gone"})
    assert done.status_code == 200 and done.json_body["status"] == "TERMINATED"


def test_too_few_operators_is_a_clear_refusal(api: Any, world: World, settings: Any) -> None:
    settings.KCM_PLATFORM_APPROVALS_REQUIRED = 2
    _doomed()
    add_operator(world, "only-other")
    ops = api("platform", Role.PLATFORM_OPERATOR)
    refused = ops.post("/api/v1/platform/tenants/doomed/terminate/", {})
    assert_problem(refused, 409, "not_enough_approvers")
    assert _status("doomed") == TenantStatus.ACTIVE


def test_a_termination_waits_for_two_other_operators_then_runs_once(
    api: Any, world: World, operators: list[tuple[User, Api]]
) -> None:
    _doomed()
    ops = api("platform", Role.PLATFORM_OPERATOR)
    policy = ops.get(APPROVALS + "policy/").json_body
    assert (policy["actions"], policy["required"]) == (["tenant.terminate"], 2)
    asked = ops.post("/api/v1/platform/tenants/doomed/terminate/", {"reason": "contract ended"})
    assert asked.status_code == 202, asked.content
    body = asked.json_body
    assert (body["action"], body["target"], body["params"], body["state"]) == (
        "tenant.terminate",
        "doomed",
        {"reason": "contract ended"},
        "PENDING",
    )
    assert body["approver_role"] == Role.PLATFORM_OPERATOR
    assert _status("doomed") == TenantStatus.ACTIVE
    assert_problem(
        ops.post("/api/v1/platform/tenants/doomed/terminate/", {}), 409, "approval_pending"
    )
    path = f"{APPROVALS}{body['id']}/"
    assert_problem(ops.post(path + "approve/", {}), 403, "requester_cannot_approve")
    # A tenant's credentials never reach the platform's requests.
    tenant_admin = api("acme", Role.TENANT_ADMIN, on="platform")
    assert_problem(tenant_admin.post(path + "approve/", {}), 403, "wrong_tenant")
    assert_problem(api("acme", Role.TENANT_ADMIN).get(path), 404, "not_found")

    first = operators[0][1].post(path + "approve/", {})
    assert first.json_body["state"] == "PENDING"
    assert _status("doomed") == TenantStatus.ACTIVE
    done = operators[1][1].post(path + "approve/", {})
    assert done.json_body["state"] == "EXECUTED", done.json_body
    assert done.json_body["result"] == {
        "slug": "doomed",
        "status": "TERMINATED",
        "status_reason": "contract ended",
    }
    assert _status("doomed") == TenantStatus.TERMINATED
    assert_problem(operators[2][1].post(path + "approve/", {}), 409, "approval_not_pending")
    listed = ops.get(APPROVALS + "?state=EXECUTED").json_body["results"]
    assert [r["id"] for r in listed] == [body["id"]]

    with schema_context("public"):
        seal_here()
        terminated = AuditEvent.objects.get(
            action="tenant.terminate", target="doomed", outcome="success"
        )
        requested = AuditEvent.objects.get(action="approval.request", target=body["id"])
        assert terminated.actor == requested.actor == body["requested_by"]
        assert terminated.details["reason"] == "contract ended"
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


def test_a_termination_bound_to_fail_is_refused_when_asked(
    api: Any, world: World, operators: list[tuple[User, Api]]
) -> None:
    ops = api("platform", Role.PLATFORM_OPERATOR)
    assert_problem(
        ops.post("/api/v1/platform/tenants/nosuch/terminate/", {}), 404, "tenant_not_found"
    )
    services.tenant_terminate(tenant=_doomed())
    assert_problem(
        ops.post("/api/v1/platform/tenants/doomed/terminate/", {}), 409, "invalid_transition"
    )
    assert ops.get(APPROVALS).json_body["results"] == []


def test_denied_withdrawn_and_expired_terminations_never_run(
    api: Any, world: World, operators: list[tuple[User, Api]]
) -> None:
    _doomed()
    ops = api("platform", Role.PLATFORM_OPERATOR)
    terminate = "/api/v1/platform/tenants/doomed/terminate/"
    denied = ops.post(terminate, {}).json_body
    no = operators[0][1].post(f"{APPROVALS}{denied['id']}/deny/", {"reason": "not yet"})
    assert no.json_body["state"] == "DENIED"
    withdrawn = ops.post(terminate, {}).json_body
    assert_problem(
        operators[0][1].post(f"{APPROVALS}{withdrawn['id']}/withdraw/", {}),
        403,
        "not_the_requester",
    )
    assert ops.post(f"{APPROVALS}{withdrawn['id']}/withdraw/", {}).json_body["state"] == (
        "WITHDRAWN"
    )
    expired = ops.post(terminate, {}).json_body
    assert operators[0][1].post(f"{APPROVALS}{expired['id']}/approve/", {}).status_code == 200
    PlatformApprovalRequest.objects.filter(pk=expired["id"]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert approvals_expire_all() == 1
    assert_problem(
        operators[1][1].post(f"{APPROVALS}{expired['id']}/approve/", {}),
        409,
        "approval_not_pending",
    )
    assert ops.get(f"{APPROVALS}{expired['id']}/").json_body["state"] == "EXPIRED"
    assert _status("doomed") == TenantStatus.ACTIVE
    with schema_context("public"):
        seal_here()
        assert not AuditEvent.objects.filter(
            action="tenant.terminate", target="doomed", outcome="success"
        )
        assert AuditEvent.objects.filter(action="approval.expire", target=expired["id"]).count()
        assert audit.audit_verify()["ok"]


def test_an_operator_removed_meanwhile_terminates_nothing(
    api: Any, world: World, operators: list[tuple[User, Api]]
) -> None:
    _doomed()
    requester, requester_api = operators[2]
    asked = requester_api.post("/api/v1/platform/tenants/doomed/terminate/", {}).json_body
    Membership.objects.filter(user=requester).delete()
    operators[0][1].post(f"{APPROVALS}{asked['id']}/approve/", {})
    done = operators[1][1].post(f"{APPROVALS}{asked['id']}/approve/", {})
    assert (done.json_body["state"], done.json_body["error_code"]) == (
        "FAILED",
        "requester_lost_role",
    )
    assert _status("doomed") == TenantStatus.ACTIVE


def test_the_platform_console_asks_lists_and_approves(
    world: World, operators: list[tuple[User, Api]]
) -> None:
    _doomed()
    requester = Client(HTTP_HOST="localhost")
    requester.force_login(world.users[("platform", Role.PLATFORM_OPERATOR)])
    asked = requester.post("/tenants/doomed/terminate/", {"reason": "bye"}, follow=True)
    assert b"waits on the Approvals page" in asked.content
    assert _status("doomed") == TenantStatus.ACTIVE
    request = PlatformApprovalRequest.objects.get()
    assert (request.target, request.params) == ("doomed", {"reason": "bye"})
    own = requester.get("/approvals/")
    assert b"Withdraw</button>" in own.content and b">Approve</button>" not in own.content

    approvers = []
    for user, _ in operators[:2]:
        client = Client(HTTP_HOST="localhost")
        client.force_login(user)
        approvers.append(client)
    page = approvers[0].get("/approvals/")
    assert b'data-testid="approvals-pending-count">1<' in page.content
    assert b"Terminate a tenant" in page.content and b">Approve</button>" in page.content
    approvers[0].post(f"/approvals/{request.pk}/approve/")
    done = approvers[1].post(f"/approvals/{request.pk}/approve/", follow=True)
    assert b"Request executed." in done.content
    assert _status("doomed") == TenantStatus.TERMINATED
