"""The approvals API: a gated action waits for M distinct approvers, then runs once, exactly as
requested, as the requester; denied, withdrawn and expired requests never run."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from django_tenants.utils import schema_context

from apps.approvals.models import ApprovalRequest
from apps.audit import services as audit
from apps.audit.models import AuditEvent
from apps.audit.sealer import seal_here
from apps.core.roles import Role
from apps.keychain.models import CustomerKey
from apps.tenants import services
from tests.approvals.conftest import Setup
from tests.helpers import assert_problem


def _key(setup: Setup) -> CustomerKey:
    with schema_context("t_acme"):
        return CustomerKey.objects.get(pk=setup.l1)


def test_by_default_nothing_needs_approval(setup: Setup) -> None:
    got = setup.auditor.get("/api/v1/approvals/policy/")
    assert got.status_code == 200 and got.json_body["actions"] == []
    assert got.json_body["required"] == 2 and got.json_body["expiry_days"] == 7
    done = setup.requester.post(f"/api/v1/keys/{setup.l1}/disable/", {})
    assert done.status_code == 200 and done.json_body["state"] == "DISABLED"


def test_a_policy_needing_more_approvers_than_the_tenant_has_is_refused(
    setup: Setup, api: Any, world: Any
) -> None:
    # acme has 4 key admins: the world's and three approvers.
    assert_problem(setup.policy(actions=["key.disable"], required=5), 400, "not_enough_approvers")
    assert setup.policy(actions=["key.disable"], required=4).status_code == 200
    # The requester never counts: a tenant admin who becomes a key admin too (5 holders now)
    # still sees only 4 others.
    services.membership_set(
        tenant=world.tenants["acme"],
        user=world.users[("acme", Role.TENANT_ADMIN)],
        roles=[Role.TENANT_ADMIN, Role.KEY_ADMIN],
    )
    assert_problem(setup.policy(actions=["key.disable"], required=5), 400, "not_enough_approvers")
    assert_problem(setup.policy(actions=["key.nothing"]), 400, "validation_error")
    assert_problem(
        setup.requester.call("PUT", "/api/v1/approvals/policy/", {"actions": []}),
        403,
        "role_not_allowed",
    )


def test_a_gated_disable_waits_for_two_approvers_then_runs_once_as_the_requester(
    setup: Setup, api: Any
) -> None:
    assert setup.policy(actions=["key.disable"]).status_code == 200
    asked = setup.requester.post(f"/api/v1/keys/{setup.l1}/disable/", {})
    assert asked.status_code == 202, asked.content
    body = asked.json_body
    assert (body["action"], body["target"], body["state"]) == ("key.disable", setup.l1, "PENDING")
    assert _key(setup).state == "ENABLED"
    path = f"/api/v1/approvals/{body['id']}/"

    assert_problem(setup.requester.post(path + "approve/", {}), 403, "requester_cannot_approve")
    assert_problem(
        setup.requester.post(f"/api/v1/keys/{setup.l1}/disable/", {}), 409, "approval_pending"
    )
    assert_problem(setup.tenant_admin.post(path + "approve/", {}), 403, "not_an_approver")
    assert_problem(setup.auditor.post(path + "approve/", {}), 403, "role_not_allowed")

    first = setup.approvers[0].api.post(path + "approve/", {})
    assert first.status_code == 200 and first.json_body["state"] == "PENDING"
    assert_problem(setup.approvers[0].api.post(path + "approve/", {}), 409, "already_approved")
    assert _key(setup).state == "ENABLED"
    second = setup.approvers[1].api.post(path + "approve/", {})
    assert second.status_code == 200 and second.json_body["state"] == "EXECUTED"
    assert second.json_body["result"]["state"] == "DISABLED"
    assert _key(setup).state == "DISABLED"
    assert_problem(setup.approvers[2].api.post(path + "approve/", {}), 409, "approval_not_pending")

    listed = setup.auditor.get("/api/v1/approvals/?state=EXECUTED").json_body["results"]
    assert [r["id"] for r in listed] == [body["id"]]
    assert_problem(setup.auditor.get("/api/v1/approvals/?state=nope"), 400, "invalid_state")
    with schema_context("t_acme"):
        seal_here()
        disable = AuditEvent.objects.get(action="key.disable", target=setup.l1, outcome="success")
        requested = AuditEvent.objects.get(action="approval.request", target=body["id"])
        executed = AuditEvent.objects.get(action="approval.execute", target=body["id"])
        # The action runs as the requester; the execution is the last approver's step.
        assert disable.actor == requested.actor == body["requested_by"]
        assert executed.actor != requested.actor
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
        assert AuditEvent.objects.filter(action="approval.policy.set", seq__lt=requested.seq)
        assert audit.audit_verify()["ok"]


def test_the_executed_action_is_exactly_the_stored_payload(setup: Setup) -> None:
    assert setup.policy(actions=["key.schedule_deletion", "key.rotate"]).status_code == 200
    asked = setup.requester.post(
        f"/api/v1/keys/{setup.l1}/schedule-deletion/", {"pending_days": 9}
    ).json_body
    assert asked["params"] == {"pending_days": 9}
    for approver in setup.approvers[:2]:
        done = approver.api.post(f"/api/v1/approvals/{asked['id']}/approve/", {})
    assert done.json_body["state"] == "EXECUTED"
    key = _key(setup)
    assert key.state == "PENDING_DELETION"
    expected = timezone.now() + timedelta(days=9)
    assert key.deletion_date is not None
    assert abs((key.deletion_date - expected).total_seconds()) < 120


def test_a_gated_rotation_rotates_once_approved(setup: Setup) -> None:
    assert setup.policy(actions=["key.rotate"]).status_code == 200
    asked = setup.requester.post(f"/api/v1/keys/{setup.l1}/rotate/", {})
    assert asked.status_code == 202 and asked.json_body["action"] == "key.rotate"
    also = setup.requester.post(f"/api/v1/rotation/keys/{setup.l1}/rotate/", {})
    assert_problem(also, 409, "approval_pending")
    assert _key(setup).primary_version == 1
    for approver in setup.approvers[:2]:
        done = approver.api.post(f"/api/v1/approvals/{asked.json_body['id']}/approve/", {})
    assert done.json_body["state"] == "EXECUTED", done.json_body
    assert _key(setup).primary_version == 2


def test_a_denied_request_never_runs(setup: Setup) -> None:
    assert setup.policy(actions=["key.disable"]).status_code == 200
    asked = setup.requester.post(f"/api/v1/keys/{setup.l1}/disable/", {}).json_body
    path = f"/api/v1/approvals/{asked['id']}/"
    assert_problem(setup.approvers[0].api.post(path + "deny/", {}), 400, "validation_error")
    assert_problem(
        setup.requester.post(path + "deny/", {"reason": "x"}), 403, "requester_cannot_approve"
    )
    denied = setup.approvers[0].api.post(path + "deny/", {"reason": "not during the audit"})
    assert denied.status_code == 200
    assert (denied.json_body["state"], denied.json_body["reason"]) == (
        "DENIED",
        "not during the audit",
    )
    assert_problem(setup.approvers[1].api.post(path + "approve/", {}), 409, "approval_not_pending")
    assert _key(setup).state == "ENABLED"
    # Once decided, the same action may be asked again.
    assert setup.requester.post(f"/api/v1/keys/{setup.l1}/disable/", {}).status_code == 202


def test_only_the_requester_withdraws(setup: Setup) -> None:
    assert setup.policy(actions=["key.disable"]).status_code == 200
    asked = setup.requester.post(f"/api/v1/keys/{setup.l1}/disable/", {}).json_body
    path = f"/api/v1/approvals/{asked['id']}/withdraw/"
    assert_problem(setup.approvers[0].api.post(path, {}), 403, "not_the_requester")
    assert setup.requester.post(path, {}).json_body["state"] == "WITHDRAWN"
    assert _key(setup).state == "ENABLED"


def test_an_expired_request_never_runs(setup: Setup) -> None:
    assert setup.policy(actions=["key.disable"]).status_code == 200
    asked = setup.requester.post(f"/api/v1/keys/{setup.l1}/disable/", {}).json_body
    path = f"/api/v1/approvals/{asked['id']}/approve/"
    assert setup.approvers[0].api.post(path, {}).status_code == 200
    with schema_context("t_acme"):
        ApprovalRequest.objects.filter(pk=asked["id"]).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )
    assert_problem(setup.approvers[1].api.post(path, {}), 409, "approval_expired")
    assert _key(setup).state == "ENABLED"
    got = setup.auditor.get(f"/api/v1/approvals/{asked['id']}/").json_body
    assert got["state"] == "EXPIRED"
    with schema_context("t_acme"):
        seal_here()
        assert AuditEvent.objects.filter(action="approval.expire", target=asked["id"]).count() == 1
        assert not AuditEvent.objects.filter(action="key.disable").exists()


def test_changing_a_gated_policy_needs_approval_too(setup: Setup) -> None:
    assert setup.policy(actions=["approval.policy.set", "key.disable"]).status_code == 200
    asked = setup.policy(actions=[])
    assert asked.status_code == 202 and asked.json_body["action"] == "approval.policy.set"
    assert setup.auditor.get("/api/v1/approvals/policy/").json_body["actions"] != []
    for approver in setup.approvers[:2]:
        done = approver.api.post(f"/api/v1/approvals/{asked.json_body['id']}/approve/", {})
    assert done.json_body["state"] == "EXECUTED"
    assert setup.auditor.get("/api/v1/approvals/policy/").json_body["actions"] == []


def test_another_tenants_request_is_not_found(setup: Setup, api: Any) -> None:
    assert setup.policy(actions=["key.disable"]).status_code == 200
    asked = setup.requester.post(f"/api/v1/keys/{setup.l1}/disable/", {}).json_body
    other = api("globex", Role.KEY_ADMIN)
    assert_problem(
        other.post(f"/api/v1/approvals/{asked['id']}/approve/", {}), 404, "approval_not_found"
    )
    assert_problem(other.get(f"/api/v1/approvals/{asked['id']}/"), 404, "approval_not_found")
    assert other.get("/api/v1/approvals/").json_body["results"] == []


def test_a_request_bound_to_fail_is_refused_when_asked_not_when_approved(
    setup: Setup, api: Any
) -> None:
    assert setup.policy(actions=["key.schedule_deletion", "key.rotate"]).status_code == 200
    bad = setup.requester.post(f"/api/v1/keys/{setup.l1}/schedule-deletion/", {"pending_days": 1})
    assert_problem(bad, 400, "invalid_pending_days")
    byok = setup.requester.post("/api/v1/customer-keys/byok/", {"name": "imported"})
    assert byok.status_code == 201, byok.content
    rotate = setup.requester.post(f"/api/v1/keys/{byok.json_body['id']}/rotate/", {})
    assert_problem(rotate, 409, "invalid_key_state")
    assert setup.auditor.get("/api/v1/approvals/").json_body["results"] == []


def test_an_action_the_service_refuses_when_it_runs_marks_the_request_failed(
    setup: Setup,
) -> None:
    assert setup.policy(actions=["key.disable"]).status_code == 200
    asked = setup.requester.post(f"/api/v1/keys/{setup.l1}/disable/", {}).json_body
    # Meanwhile the key is scheduled for deletion (not gated): it can no longer be disabled.
    moved = setup.requester.post(f"/api/v1/keys/{setup.l1}/schedule-deletion/", {"pending_days": 7})
    assert moved.status_code == 200
    for approver in setup.approvers[:2]:
        done = approver.api.post(f"/api/v1/approvals/{asked['id']}/approve/", {})
    assert done.status_code == 200
    assert (done.json_body["state"], done.json_body["error_code"]) == (
        "FAILED",
        "invalid_key_state",
    )
    assert _key(setup).state == "PENDING_DELETION"
    with schema_context("t_acme"):
        seal_here()
        executed = AuditEvent.objects.get(action="approval.execute", target=asked["id"])
        assert (executed.outcome, executed.error_code) == ("error", "invalid_key_state")
        assert audit.audit_verify()["ok"]


def test_the_requester_runs_a_failed_request_again_once_the_key_allows_it(
    setup: Setup,
) -> None:
    assert setup.policy(actions=["key.disable"]).status_code == 200
    asked = setup.requester.post(f"/api/v1/keys/{setup.l1}/disable/", {}).json_body
    moved = setup.requester.post(f"/api/v1/keys/{setup.l1}/schedule-deletion/", {"pending_days": 7})
    assert moved.status_code == 200
    for approver in setup.approvers[:2]:
        done = approver.api.post(f"/api/v1/approvals/{asked['id']}/approve/", {})
    assert done.json_body["state"] == "FAILED"
    execute = f"/api/v1/approvals/{asked['id']}/execute/"
    # Still in the wrong state: it fails again, and stays retryable.
    again = setup.requester.post(execute, {})
    assert (again.json_body["state"], again.json_body["error_code"]) == (
        "FAILED",
        "invalid_key_state",
    )
    assert setup.requester.post(f"/api/v1/keys/{setup.l1}/cancel-deletion/", {}).status_code == 200
    assert setup.requester.post(f"/api/v1/keys/{setup.l1}/enable/", {}).status_code == 200
    assert _key(setup).state == "ENABLED"
    assert_problem(setup.approvers[0].api.post(execute, {}), 403, "not_the_requester")
    assert_problem(setup.auditor.post(execute, {}), 403, "role_not_allowed")
    ran = setup.requester.post(execute, {})
    assert ran.status_code == 200, ran.content
    assert (ran.json_body["state"], ran.json_body["error_code"]) == ("EXECUTED", "")
    assert _key(setup).state == "DISABLED"
    assert_problem(setup.requester.post(execute, {}), 409, "approval_not_pending")
    with schema_context("t_acme"):
        seal_here()
        runs = AuditEvent.objects.filter(
            action="approval.execute", target=asked["id"], details__has_key="approved_by"
        )
        assert [
            (e.outcome, e.actor == done.json_body["requested_by"]) for e in runs.order_by("seq")
        ] == [
            ("error", False),  # the last approver's step
            ("error", True),  # the requester's first retry
            ("success", True),
        ]
        assert AuditEvent.objects.filter(action="key.disable", outcome="success").count() == 1
        assert audit.audit_verify()["ok"]


def test_a_failed_request_past_its_expiry_is_not_run_again(setup: Setup) -> None:
    assert setup.policy(actions=["key.disable"]).status_code == 200
    asked = setup.requester.post(f"/api/v1/keys/{setup.l1}/disable/", {}).json_body
    setup.requester.post(f"/api/v1/keys/{setup.l1}/schedule-deletion/", {"pending_days": 7})
    for approver in setup.approvers[:2]:
        approver.api.post(f"/api/v1/approvals/{asked['id']}/approve/", {})
    setup.requester.post(f"/api/v1/keys/{setup.l1}/cancel-deletion/", {})
    assert setup.requester.post(f"/api/v1/keys/{setup.l1}/enable/", {}).status_code == 200
    with schema_context("t_acme"):
        ApprovalRequest.objects.filter(pk=asked["id"]).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )
    expired = setup.requester.post(f"/api/v1/approvals/{asked['id']}/execute/", {})
    assert_problem(expired, 409, "approval_expired")
    assert _key(setup).state == "ENABLED"
