"""Rotation, in each tenant's schema: rewrap jobs and rotation policies.

Rotating an L1 adds a version and moves the tenant key's (L2) versions under it; rotating an
L2 moves the service keys' (L3) versions under its new version. A `RewrapJob` does the moving
in batches, each committing the children's new ciphertexts with their new parent reference
and the job's cursor, so that a worker may die at any moment without losing anything.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone


class JobState(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING)


class JobReason(models.TextChoices):
    MANUAL = "manual"
    POLICY = "policy"
    PLATFORM = "platform"


class RewrapLevel(models.TextChoices):
    """The level of the rotated key; its children are one level below."""

    L1 = "L1", "Customer key (rewraps tenant-key versions)"
    L2 = "L2", "Tenant key (rewraps service-key versions)"


class RewrapJob(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    level = models.CharField(max_length=2, choices=RewrapLevel.choices)
    key_id = models.UUIDField()  # a CustomerKey (L1) or TenantKey (L2)
    from_version = models.PositiveIntegerField()  # the key's primary version before
    # The version every child ends up under; None for a dry run, which rotates nothing.
    target_version = models.PositiveIntegerField(null=True, blank=True)
    dry_run = models.BooleanField(default=False)
    state = models.CharField(max_length=10, choices=JobState.choices, default=JobState.QUEUED)
    reason = models.CharField(max_length=10, choices=JobReason.choices, default=JobReason.MANUAL)
    requested_by = models.CharField(max_length=200, blank=True)
    platform_run = models.UUIDField(null=True, blank=True)
    total = models.BigIntegerField(default=0)  # children to move when the job was created
    done = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)
    # Children are visited in primary-key order; everything up to `cursor` has been handled.
    cursor = models.BigIntegerField(default=0)
    passes = models.PositiveSmallIntegerField(default=0)
    rate = models.FloatField(default=0.0)  # children per second, over the latest run
    error = models.JSONField(default=dict, blank=True)
    report = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Last sign of life: a batch committed, or the job was (re)queued.
    heartbeat_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One rotation per key at a time, whatever the race between requests.
            models.UniqueConstraint(
                fields=["key_id"],
                condition=Q(state__in=["queued", "running"], dry_run=False),
                name="rotation_one_active_job_per_key",
            ),
            # A platform run creates at most one job per key, however often it is resumed.
            models.UniqueConstraint(
                fields=["platform_run", "key_id"], name="rotation_platform_run_key_once"
            ),
        ]
        indexes = [
            models.Index(
                fields=["state"],
                condition=Q(state__in=["queued", "running"]),
                name="rotation_job_active",
            ),
        ]

    def __str__(self) -> str:
        return f"rewrap {self.level} {self.key_id} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES


class PolicyLevel(models.TextChoices):
    L1 = "L1", "Customer key"
    L2 = "L2", "Tenant key"
    L3 = "L3", "Service key"


class RotationPolicy(models.Model):
    """When a key is due for rotation. With `key_id` NULL, the tenant's default for `level`;
    a key's own policy overrides the default field by field (NULL inherits)."""

    level = models.CharField(max_length=2, choices=PolicyLevel.choices)
    key_id = models.UUIDField(null=True, blank=True, unique=True)
    period_days = models.PositiveIntegerField(null=True, blank=True)
    # L3 only: rotate once the primary version's reserved encryptions reach this count.
    max_usage = models.BigIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["level"],
                condition=Q(key_id__isnull=True),
                name="rotation_one_default_per_level",
            ),
            models.CheckConstraint(
                condition=Q(max_usage__isnull=True) | Q(level="L3", max_usage__gte=1),
                name="rotation_max_usage_l3_only",
            ),
            models.CheckConstraint(
                condition=Q(period_days__isnull=True) | Q(period_days__gte=1),
                name="rotation_period_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"rotation policy {self.level} {self.key_id or 'default'}"
