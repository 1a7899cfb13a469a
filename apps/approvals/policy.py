"""A tenant's approval policy: read, check and set it."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.utils import timezone

from apps.approvals.actions import ACTIONS
from apps.approvals.models import ApprovalPolicy
from apps.audit.services import audit_record
from apps.core.errors import ValidationFailed
from apps.core.roles import Role
from apps.tenants.models import Membership

APPROVER_ROLES = (Role.KEY_ADMIN, Role.TENANT_ADMIN)
MAX_REQUIRED = 10
MAX_EXPIRY_DAYS = 30


def policy_get() -> ApprovalPolicy:
    """The tenant's policy; an unsaved default (approvals off) when none was ever set."""
    return ApprovalPolicy.objects.order_by("pk").first() or ApprovalPolicy()


def policy_body(policy: ApprovalPolicy) -> dict[str, Any]:
    return {
        "actions": sorted(policy.actions),
        "required": policy.required,
        "approver_role": policy.approver_role,
        "expiry_days": policy.expiry_days,
        "available_actions": sorted(ACTIONS),
    }


def eligible_approvers(*, approver_role: str, excluding: int | None) -> int:
    """Members of this tenant holding `approver_role`, not counting the person `excluding`."""
    members = Membership.objects.filter(
        tenant_id=connection.tenant.pk,  # type: ignore[attr-defined]
        roles__contains=[approver_role],
    )
    if excluding is not None:
        members = members.exclude(user_id=excluding)
    return members.count()


def policy_check(
    *,
    actions: list[str],
    required: int,
    approver_role: str,
    expiry_days: int,
    requester: int | None,
) -> dict[str, Any]:
    """The policy's parameters, checked; ValidationFailed with a stable code otherwise
    (`not_enough_approvers` when fewer eligible members than `required`, the requester aside:
    no tenant gets a key nobody can act on)."""
    unknown = sorted(set(actions) - set(ACTIONS))
    if unknown:
        raise ValidationFailed(
            f"Unknown action {unknown[0]!r}; one of {', '.join(sorted(ACTIONS))}.",
            code="invalid_action",
        )
    if not 1 <= required <= MAX_REQUIRED:
        raise ValidationFailed(
            f"required must be between 1 and {MAX_REQUIRED}.", code="invalid_required"
        )
    if approver_role not in APPROVER_ROLES:
        raise ValidationFailed(
            f"approver_role must be one of {', '.join(APPROVER_ROLES)}.",
            code="invalid_approver_role",
        )
    if not 1 <= expiry_days <= MAX_EXPIRY_DAYS:
        raise ValidationFailed(
            f"expiry_days must be between 1 and {MAX_EXPIRY_DAYS}.", code="invalid_expiry_days"
        )
    if actions:
        eligible = eligible_approvers(approver_role=approver_role, excluding=requester)
        if eligible < required:
            raise ValidationFailed(
                f"The policy needs {required} approvers holding {approver_role}, besides you; "
                f"this tenant has {eligible}.",
                code="not_enough_approvers",
            )
    return {
        "actions": sorted(set(actions)),
        "required": required,
        "approver_role": approver_role,
        "expiry_days": expiry_days,
        "requester": requester,
    }


def policy_apply(
    *,
    actions: list[str],
    required: int,
    approver_role: str,
    expiry_days: int,
    requester: int | None,
) -> ApprovalPolicy:
    """Set the policy (checked again: members may have left since it was requested)."""
    checked = policy_check(
        actions=actions,
        required=required,
        approver_role=approver_role,
        expiry_days=expiry_days,
        requester=requester,
    )
    policy = policy_get()
    policy.actions = checked["actions"]
    policy.required = required
    policy.approver_role = approver_role
    policy.expiry_days = expiry_days
    policy.updated_at = timezone.now()
    policy.save()
    body = policy_body(policy)
    del body["available_actions"]
    audit_record(action="approval.policy.set", details=body)
    return policy
