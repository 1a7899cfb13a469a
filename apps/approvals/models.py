"""A tenant's approval policy and its approval requests (in the tenant's schema)."""

from __future__ import annotations

import uuid

from django.contrib.postgres.fields import ArrayField
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone

from apps.core.roles import Role


class ApprovalPolicy(models.Model):
    """Which actions need approval, by how many distinct approvers holding `approver_role`
    (the requester never counts), and how long a request waits. One row per tenant; no row,
    or no actions, means approvals are off."""

    actions = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    required = models.PositiveSmallIntegerField(default=2)
    approver_role = models.CharField(max_length=32, default=Role.KEY_ADMIN)
    expiry_days = models.PositiveSmallIntegerField(default=7)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.required} of {self.approver_role} for {','.join(self.actions) or 'nothing'}"


class RequestState(models.TextChoices):
    PENDING = "PENDING"
    EXECUTED = "EXECUTED"
    FAILED = "FAILED"  # approved, but the action itself was refused when it ran
    DENIED = "DENIED"
    WITHDRAWN = "WITHDRAWN"
    EXPIRED = "EXPIRED"


class RequestBase(models.Model):
    """One gated action with its exact parameters: approving approves this payload, and it runs
    once, as the requester, when the last approval arrives (a FAILED run may be retried by the
    requester until the request expires). A tenant's requests live in its schema
    (`ApprovalRequest`), the platform's in the public schema (apps.approvals.platform)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=64)
    params = models.JSONField(default=dict, encoder=DjangoJSONEncoder)
    state = models.CharField(
        max_length=16, choices=RequestState.choices, default=RequestState.PENDING
    )
    required = models.PositiveSmallIntegerField()
    approver_role = models.CharField(max_length=32)
    # The person behind the request: a user, or the user who created the requesting token.
    requester_person = models.IntegerField(null=True)
    requester_actor = models.CharField(max_length=200)
    requester_role = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True)
    decided_by = models.CharField(max_length=200, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    result = models.JSONField(null=True, encoder=DjangoJSONEncoder)
    error_code = models.CharField(max_length=64, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.action} {self.target} ({self.state})"


class ApprovalRequest(RequestBase):
    """A tenant's approval request (in the tenant's schema)."""

    class Meta(RequestBase.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["action", "target"],
                condition=Q(state="PENDING"),
                name="approvals_one_pending_per_action_and_target",
            )
        ]


class ApprovalBase(models.Model):
    """One approver's yes to one request; a person approves a request once."""

    person = models.IntegerField()
    actor = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.actor} approves {self.request_id}"  # type: ignore[attr-defined]


class Approval(ApprovalBase):
    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="approvals")

    class Meta(ApprovalBase.Meta):
        constraints = [
            models.UniqueConstraint(fields=["request", "person"], name="approvals_once_per_person")
        ]
