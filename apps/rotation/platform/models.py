"""A platform-wide rotation (public schema): rotate one level in every active tenant.

The run itself only fans out: for each tenant, in tenant-id order, it starts one rewrap job per
key of that level (tagged with the run's id) and advances `cursor` in the same transaction, so
a fan-out killed mid-way resumes where it stopped and never rotates a key twice. Progress is
read from the tenants' jobs.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone


class RunState(models.TextChoices):
    FANNING_OUT = "fanning_out"
    FANNED_OUT = "fanned_out"  # every tenant has its jobs; they run on their own


class PlatformRotation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    level = models.CharField(max_length=2)  # "L1" or "L2"
    dry_run = models.BooleanField(default=False)
    state = models.CharField(max_length=12, choices=RunState.choices, default=RunState.FANNING_OUT)
    requested_by = models.CharField(max_length=200, blank=True)
    cursor = models.BigIntegerField(default=0)  # the last tenant id fanned out to
    tenants = models.IntegerField(default=0)  # tenants visited so far
    jobs = models.IntegerField(default=0)  # jobs started so far
    # Keys that could not be rotated, e.g. one with a rotation of its own running.
    skipped = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now)
    fanned_out_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"platform rotation {self.level} ({self.state})"


class TenantRotationCheck(models.Model):
    """When the beat sweep next looks into a tenant's keys (one row per tenant, public schema).

    Looking costs a query over half a dozen of the tenant's tables; with thousands of tenants
    the sweep cannot afford it every minute for each. So each look also notes when the next
    key falls due by period, and the tenant is looked at again then, or after
    KCM_ROTATION_CHECK_SECONDS at the latest (that bounds how late a usage count, or a key
    created meanwhile with a short period, is noticed). A policy change asks for a look now.
    The same row tells the sweep which tenants may have a rewrap job to watch.
    """

    tenant = models.OneToOneField(
        "tenants.Tenant", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    next_check_at = models.DateTimeField(db_index=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    # Set when a job of the tenant was queued; the sweep watches only these tenants' jobs for
    # stalls, and clears it once it finds none active (a worker starting watches all).
    jobs_active_since = models.DateTimeField(null=True, blank=True, db_index=True)

    def __str__(self) -> str:
        return f"rotation check of tenant {self.tenant_id} at {self.next_check_at}"
