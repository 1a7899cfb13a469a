"""Rotation writes: start a rotation, cancel and resume its rewrap job (the job itself runs in
`apps.rotation.runner`).

Crash safety rests on three facts. Each batch commits the children's new ciphertexts, their
new parent reference and the job's cursor in one transaction, so a worker killed at any moment
leaves either the whole batch or none of it. Children already under the target version are
never selected again, so running a job twice moves nothing twice. And a parent version is
retired only after a check, under the key's row lock, that no child with material references
it (for an L1, its HSM object is removed only after that commit).
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from apps.audit.context import current as audit_current
from apps.audit.services import audit_record
from apps.keychain import services as keychain_services
from apps.keychain.chain import find_key
from apps.keychain.models import CustomerKey, ServiceKey, TenantKey
from apps.rotation.errors import (
    InvalidJobState,
    JobNotFound,
    JobSuperseded,
    RotationInProgress,
    RotationNotSupported,
)
from apps.rotation.models import ACTIVE_STATES, JobReason, JobState, RewrapJob, RewrapLevel
from apps.rotation.platform.models import TenantRotationCheck
from apps.rotation.rewrap import children_of
from apps.rotation.runner import job_runner_alive
from apps.rotation.selectors import active_job_for
from apps.tenants.access import current_tenant

AnyKey = CustomerKey | TenantKey | ServiceKey


@dataclass(frozen=True)
class Rotation:
    key: AnyKey
    job: RewrapJob | None  # None for an L3: its children (data keys) are with the customer


# --- start --------------------------------------------------------------------------------


def rotation_start(
    *,
    key_id: UUID | str,
    dry_run: bool = False,
    reason: str = JobReason.MANUAL,
    platform_run: UUID | None = None,
) -> Rotation:
    """Rotate a key now and, for an L1 or L2, queue the job that moves its children under the
    new version. A dry run rotates nothing: its job only checks every child and reports.

    Raises `RotationInProgress` (409, naming the job) while another rotation of the key runs.
    Within a platform run a key is rotated at most once: a second call returns the first job.
    """
    found = find_key(key_id)
    if dry_run and isinstance(found, ServiceKey):
        raise RotationNotSupported(
            "A service key's children are data keys held by their owners, not by KCM: nothing "
            "to rewrap here. Rotate it, then rewrap data keys with the rewrap operation."
        )
    with transaction.atomic():
        key = type(found).objects.select_for_update().get(pk=found.pk)
        if platform_run is not None:
            earlier = RewrapJob.objects.filter(platform_run=platform_run, key_id=key.pk).first()
            if earlier is not None:
                return Rotation(key, earlier)
        if not dry_run:
            _refuse_if_rotating(key)
        from_version = key.primary_version
        if not dry_run:
            key = keychain_services.key_rotate(key_id=key.pk)
        if isinstance(key, ServiceKey):
            return Rotation(key, None)
        job = _job_create(
            key,
            from_version=from_version,
            target_version=None if dry_run else key.primary_version,
            reason=reason,
            platform_run=platform_run,
        )
    return Rotation(key, job)


def rewrap_start(*, key_id: UUID | str, reason: str = JobReason.MANUAL) -> RewrapJob:
    """Move an L1's or L2's children under its current primary version without rotating it:
    after a version was added some other way (a BYOK import, a HYOK link), or to finish what a
    cancelled or failed rotation left behind. Same rules and job as a rotation."""
    found = find_key(key_id)
    if isinstance(found, ServiceKey):
        raise RotationNotSupported("A service key's children are not held by KCM.")
    with transaction.atomic():
        key = type(found).objects.select_for_update().get(pk=found.pk)
        _refuse_if_rotating(key)
        probe = RewrapJob(level=_level(key), key_id=key.pk, target_version=key.primary_version)
        under = children_of(probe).census(pending_only=True)
        return _job_create(
            key,
            from_version=min(under, default=key.primary_version),
            target_version=key.primary_version,
            reason=reason,
        )


def _level(key: CustomerKey | TenantKey) -> str:
    return RewrapLevel.L1 if isinstance(key, CustomerKey) else RewrapLevel.L2


def _refuse_if_rotating(key: AnyKey) -> None:
    active = active_job_for(key_id=key.pk)
    if active is not None:
        raise RotationInProgress(
            f"Rotation job {active.pk} of this key is {active.state}; wait for it to finish or "
            "cancel it.",
            job_id=str(active.pk),
        )


def _job_create(
    key: CustomerKey | TenantKey,
    *,
    from_version: int,
    target_version: int | None,
    reason: str,
    platform_run: UUID | None = None,
) -> RewrapJob:
    """Save a job for `key` (in the caller's transaction), audit it and queue it on commit."""
    job = RewrapJob(
        level=_level(key),
        key_id=key.pk,
        from_version=from_version,
        target_version=target_version,
        dry_run=target_version is None,
        reason=reason,
        requested_by=audit_current().actor,
        platform_run=platform_run,
    )
    children = children_of(job)
    children.ensure_usable()
    job.total = children.count_pending()
    job.save()
    audit_record(
        action="rotation.job.start",
        target=str(key.pk),
        target_version=target_version,
        details={
            "job": str(job.pk),
            "level": job.level,
            "from_version": from_version,
            "children": job.total,
            "dry_run": job.dry_run,
            "reason": reason,
            **({"platform_run": str(platform_run)} if platform_run else {}),
        },
    )
    _enqueue(job)
    return job


def key_rotate_with_rewrap(*, key_id: UUID | str) -> AnyKey:
    """`rotation_start` for callers that only show the key (the key chain's own rotate
    action): every path that rotates queues the rewrap and honours one rotation per key."""
    return rotation_start(key_id=key_id).key


def _enqueue(job: RewrapJob) -> None:
    """Queue the job's runner once the caller's transaction commits, and have the beat sweep
    watch the tenant's jobs: if the broker refuses, or loses the message, the sweep queues
    the job again once it counts as stalled."""
    tenant = current_tenant()
    schema, job_id = tenant.schema_name, str(job.pk)
    now = timezone.now()
    TenantRotationCheck.objects.update_or_create(
        tenant_id=tenant.pk,
        defaults={"jobs_active_since": now},
        create_defaults={"jobs_active_since": now, "next_check_at": now},
    )

    def send() -> None:
        from apps.rotation.tasks import rewrap_job_run

        rewrap_job_run.delay(schema, job_id)

    transaction.on_commit(send, robust=True)


# --- cancel and resume ----------------------------------------------------------------------


def _locked_job(job_id: UUID | str) -> RewrapJob:
    job = RewrapJob.objects.select_for_update().filter(pk=job_id).first()
    if job is None:
        raise JobNotFound()
    return job


def rewrap_job_cancel(*, job_id: UUID | str) -> RewrapJob:
    """Stop a queued or running job after its current batch. Nothing is lost: moved children
    stay moved, the others stay under versions that keep working; it can be resumed."""
    with transaction.atomic():
        job = _locked_job(job_id)
        if job.state not in ACTIVE_STATES:
            raise InvalidJobState(f"The job is {job.state}; only a queued or running job stops.")
        job.state = JobState.CANCELLED
        job.finished_at = job.heartbeat_at = timezone.now()
        job.save(update_fields=["state", "finished_at", "heartbeat_at"])
        audit_record(
            action="rotation.job.cancel",
            target=str(job.key_id),
            target_version=job.target_version,
            details={"job": str(job.pk), "level": job.level, "done": job.done},
        )
    return job


def rewrap_job_resume(*, job_id: UUID | str) -> RewrapJob:
    """Queue a cancelled or failed job again. A cancelled job continues from its cursor; a
    failed one goes over every child left behind (failed children are tried again)."""
    with transaction.atomic():
        job = _locked_job(job_id)
        if job.state not in (JobState.CANCELLED, JobState.FAILED):
            raise InvalidJobState(
                f"The job is {job.state}; only a cancelled or failed job resumes."
            )
        if not job.dry_run:
            found = find_key(job.key_id)
            # Check the primary version on the locked row, not on the copy read before it.
            key = type(found).objects.select_for_update().get(pk=found.pk)
            if key.primary_version != job.target_version:
                raise JobSuperseded(
                    f"The key's primary version is now {key.primary_version}, not this job's "
                    f"{job.target_version}."
                )
            _refuse_if_rotating(key)
        if job.state == JobState.FAILED:
            job.cursor, job.failed, job.passes, job.error = 0, 0, 0, {}
        job.state = JobState.QUEUED
        job.finished_at = None
        job.heartbeat_at = timezone.now()
        job.save()
        audit_record(
            action="rotation.job.resume",
            target=str(job.key_id),
            target_version=job.target_version,
            details={"job": str(job.pk), "level": job.level, "cursor": job.cursor},
        )
        _enqueue(job)
    return job


def rewrap_job_requeue(*, job_id: UUID | str) -> bool:
    """Queue an active job's runner again (after a crash lost it); False if it is not active
    or a runner holds it."""
    if job_runner_alive(job_id):
        return False
    with transaction.atomic():
        job = RewrapJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.state not in ACTIVE_STATES:
            return False
        # A sign of life, so that the next sweep waits a full stall period before trying again.
        job.heartbeat_at = timezone.now()
        job.save(update_fields=["heartbeat_at"])
        _enqueue(job)
    return True
