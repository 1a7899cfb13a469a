"""The platform's approval requests and approvals (public schema). Same shape and states as a
tenant's (apps.approvals.models); the policy is the deployment's settings
(KCM_PLATFORM_APPROVALS_REQUIRED, KCM_PLATFORM_APPROVAL_EXPIRY_DAYS), not a row."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from apps.approvals.models import ApprovalBase, RequestBase


class PlatformApprovalRequest(RequestBase):
    class Meta(RequestBase.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["action", "target"],
                condition=Q(state="PENDING"),
                name="platform_approvals_one_pending_per_action_and_target",
            )
        ]


class PlatformApproval(ApprovalBase):
    request = models.ForeignKey(
        PlatformApprovalRequest, on_delete=models.CASCADE, related_name="approvals"
    )

    class Meta(ApprovalBase.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["request", "person"], name="platform_approvals_once_per_person"
            )
        ]
