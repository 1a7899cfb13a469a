"""Work across tenants, from the public schema: the beat sweep (due rotations and stalled
jobs) and platform-wide rotations (one level in every active tenant)."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_tenants.utils import tenant_context

from apps.audit.context import current as audit_current
from apps.audit.models import Outcome
from apps.audit.services import audit_record
from apps.core.errors import KcmError, ValidationFailed
from apps.keychain.models import CustomerKey, KeyState, Origin, TenantKey
from apps.rotation import selectors
from apps.rotation.errors import PlatformRunNotFound
from apps.rotation.models import JobReason
from apps.rotation.platform.models import PlatformRotation, RunState, TenantRotationCheck
from apps.rotation.runner import job_lock
from apps.rotation.services import rewrap_job_requeue, rotation_start
from apps.tenants.models import Tenant
from apps.tenants.selectors import tenants_for_upkeep

logger = logging.getLogger(__name__)


@dataclass
class SweepReport:
    tenants: int = 0
    checked: int = 0  # tenants whose keys were looked at (see TenantRotationCheck)
    due: int = 0
    rotated: list[str] = field(default_factory=list)  # "<schema>:<key id>"
    refused: list[str] = field(default_factory=list)  # "<schema>:<key id>:<code>"
    requeued_jobs: int = 0
    requeued_runs: int = 0

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def rotation_sweep(*, now: datetime | None = None, check_all: bool = False) -> SweepReport:
    """Beat: start the rotation of every due key in the active tenants whose turn it is to be
    looked at (all of them with `check_all`), note when to look at each again, then requeue
    jobs and platform runs that have shown no sign of life for KCM_REWRAP_STALL_SECONDS.
    With nothing due and no job running, three small queries on the public schema."""
    now = now or timezone.now()
    report = SweepReport(tenants=tenants_for_upkeep().count())
    if check_all:
        tenants_now = list(tenants_for_upkeep())
    else:
        later = TenantRotationCheck.objects.filter(next_check_at__gt=now).values("tenant_id")
        tenants_now = list(tenants_for_upkeep().exclude(pk__in=later))
    report.checked = len(tenants_now)
    by_schema = {tenant.schema_name: tenant for tenant in tenants_now}
    scan = selectors.due_scan(schemas=list(by_schema), now=now)
    report.due = len(scan.due)
    for schema, key_id, _level in scan.due:
        with tenant_context(by_schema[schema]):
            try:
                rotation_start(key_id=key_id, reason=JobReason.POLICY)
            except KcmError as exc:
                report.refused.append(f"{schema}:{key_id}:{exc.code}")
                audit_record(
                    action="rotation.policy.rotate",
                    outcome=Outcome.ERROR,
                    target=str(key_id),
                    error_code=exc.code,
                    details={"detail": exc.detail},
                )
            else:
                report.rotated.append(f"{schema}:{key_id}")
    _schedule_checks(tenants_now, scan.next_due, now)
    stale = timedelta(seconds=settings.KCM_REWRAP_STALL_SECONDS)
    watched = TenantRotationCheck.objects.filter(jobs_active_since__isnull=False)
    report.requeued_jobs = rotation_resume(
        stale_after=stale,
        tenants=list(tenants_for_upkeep().filter(pk__in=watched.values("tenant_id"))),
    )
    report.requeued_runs = platform_runs_resume(stale_after=stale)
    return report


def _schedule_checks(tenants: list[Tenant], next_due: dict[str, datetime], now: datetime) -> None:
    """Look at each tenant again when its next key falls due, or within the check interval
    (80-100% of it, so that tenants first seen together do not all come back together)."""
    interval = settings.KCM_ROTATION_CHECK_SECONDS
    rows = []
    for tenant in tenants:
        latest = now + timedelta(seconds=interval * (0.8 + secrets.randbelow(201) / 1000))
        due = next_due.get(tenant.schema_name)
        rows.append(
            TenantRotationCheck(
                tenant=tenant,
                next_check_at=min(due, latest) if due is not None else latest,
                checked_at=now,
            )
        )
    TenantRotationCheck.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["tenant"],
        update_fields=["next_check_at", "checked_at"],
    )


def rotation_resume(
    *, stale_after: timedelta | None = None, tenants: list[Tenant] | None = None
) -> int:
    """Queue again every active job that no process runs and (with `stale_after`) that has
    been silent that long, in `tenants` (default: every active tenant). With None, every such
    job: a worker calls this when it starts, since a job whose worker was killed has no runner
    until someone queues it. Tenants found without an active job are no longer watched."""
    tenants = tenants if tenants is not None else list(tenants_for_upkeep())
    by_schema = {tenant.schema_name: tenant for tenant in tenants}
    began = now = timezone.now()
    requeued = 0
    busy = set()
    for schema, job_id, heartbeat_at in selectors.active_jobs(schemas=list(by_schema)):
        busy.add(by_schema[schema].pk)
        if stale_after is not None and heartbeat_at > now - stale_after:
            continue
        with tenant_context(by_schema[schema]):
            requeued += rewrap_job_requeue(job_id=job_id)
    # Only if no job was queued since the scan began (that one would set it again anyway).
    TenantRotationCheck.objects.filter(
        tenant_id__in=[t.pk for t in tenants if t.pk not in busy], jobs_active_since__lt=began
    ).update(jobs_active_since=None)
    return requeued


# --- platform-wide rotation -------------------------------------------------------------------


def platform_rotation_start(*, level: str, dry_run: bool = False) -> PlatformRotation:
    """Rotate `level` ("L1" or "L2") of every key in every active tenant: each gets its own
    rewrap job, tagged with the run. Returns at once; the fan-out runs on a worker."""
    if level not in ("L1", "L2"):
        raise ValidationFailed("level must be L1 or L2.", code="invalid_level")
    with transaction.atomic():
        run = PlatformRotation.objects.create(
            level=level, dry_run=dry_run, requested_by=audit_current().actor
        )
        audit_record(
            action="rotation.platform.start",
            target=str(run.pk),
            details={"level": level, "dry_run": dry_run},
        )
        _enqueue_run(run.pk)
    return run


def _enqueue_run(run_id: UUID) -> None:
    def send() -> None:
        from apps.rotation.tasks import platform_rotation_run

        platform_rotation_run.delay(str(run_id))

    transaction.on_commit(send, robust=True)


def _keys_of_level(level: str) -> list[Any]:
    if level == "L1":
        return list(
            CustomerKey.objects.filter(state=KeyState.ENABLED, origin=Origin.HSM).order_by("pk")
        )
    return list(
        TenantKey.objects.filter(
            state=KeyState.ENABLED, customer_key__state=KeyState.ENABLED
        ).order_by("pk")
    )


def platform_rotation_run(*, run_id: UUID | str) -> str:
    """Fan a run out, tenant by tenant in id order; each tenant's rotations and the run's
    cursor commit together, so a run killed mid-way resumes without rotating a key twice."""
    with job_lock(run_id) as mine:
        if not mine:
            return "busy"
        while True:
            with transaction.atomic():
                run = PlatformRotation.objects.select_for_update().filter(pk=run_id).first()
                if run is None:
                    raise PlatformRunNotFound()
                if run.state != RunState.FANNING_OUT:
                    return run.state
                tenant = tenants_for_upkeep().filter(pk__gt=run.cursor).first()
                if tenant is None:
                    run.state = RunState.FANNED_OUT
                    run.fanned_out_at = run.heartbeat_at = timezone.now()
                    run.save(update_fields=["state", "fanned_out_at", "heartbeat_at"])
                    audit_record(
                        action="rotation.platform.fanned_out",
                        target=str(run.pk),
                        details={"tenants": run.tenants, "jobs": run.jobs, "skipped": run.skipped},
                    )
                    return run.state
                _fan_out_to(run, tenant)
                run.cursor = tenant.pk
                run.tenants += 1
                run.heartbeat_at = timezone.now()
                run.save()


def _fan_out_to(run: PlatformRotation, tenant: Tenant) -> None:
    with tenant_context(tenant):
        for key in _keys_of_level(run.level):
            try:
                rotation = rotation_start(
                    key_id=key.pk,
                    dry_run=run.dry_run,
                    reason=JobReason.PLATFORM,
                    platform_run=run.pk,
                )
            except KcmError as exc:
                run.skipped.append({"tenant": tenant.slug, "key": str(key.pk), "code": exc.code})
                logger.warning("platform run %s skipped %s/%s: %s", run.pk, tenant, key.pk, exc)
            else:
                run.jobs += rotation.job is not None


def platform_runs_resume(*, stale_after: timedelta | None = None) -> int:
    """Queue again every run still fanning out that no process runs (and, with `stale_after`,
    that has been silent that long)."""
    runs = PlatformRotation.objects.filter(state=RunState.FANNING_OUT)
    if stale_after is not None:
        runs = runs.filter(heartbeat_at__lte=timezone.now() - stale_after)
    requeued = 0
    for run_id in runs.values_list("pk", flat=True):
        with job_lock(run_id) as free:
            if not free:
                continue
        with transaction.atomic():
            PlatformRotation.objects.filter(pk=run_id).update(heartbeat_at=timezone.now())
            _enqueue_run(run_id)
        requeued += 1
    return requeued


def platform_run_get(*, run_id: UUID | str) -> PlatformRotation:
    run = PlatformRotation.objects.filter(pk=run_id).first()
    if run is None:
        raise PlatformRunNotFound()
    return run


def platform_run_detail(run: PlatformRotation) -> dict[str, Any]:
    """A run with its jobs' progress summed over every tenant."""
    totals = selectors.platform_run_totals(
        schemas=[t.schema_name for t in list(tenants_for_upkeep())], run_id=run.pk
    )
    handled = totals["done"] + totals["failed"]
    if run.state == RunState.FANNING_OUT:
        state = "fanning_out"
    elif totals["active_jobs"]:
        state = "running"
    elif totals["jobs_by_state"].get("failed") or totals["jobs_by_state"].get("cancelled"):
        state = "incomplete"
    else:
        state = "succeeded"
    remaining = max(totals["total"] - handled, 0)
    return {
        "id": str(run.pk),
        "level": run.level,
        "dry_run": run.dry_run,
        "state": state,
        "requested_by": run.requested_by,
        "tenants": run.tenants,
        "jobs": run.jobs,
        "skipped": run.skipped,
        **totals,
        "progress": min(handled / totals["total"], 1.0) if totals["total"] else None,
        "eta_seconds": round(remaining / totals["rate"], 1) if totals["rate"] > 0 else None,
        "created_at": run.created_at,
        "fanned_out_at": run.fanned_out_at,
    }


__all__ = [
    "platform_rotation_run",
    "platform_rotation_start",
    "platform_run_detail",
    "platform_run_get",
    "platform_runs_resume",
    "rotation_resume",
    "rotation_sweep",
]
