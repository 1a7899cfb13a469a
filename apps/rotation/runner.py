"""Running a rewrap job: batch after batch until no child is left, then retire what nothing
references any more. See `apps.rotation.services` for why this is crash-safe.

One runner per job: `rewrap_job_run` holds a PostgreSQL advisory lock on the job for as long
as it runs, on a direct connection of its own (JobLock). The lock dies with that connection,
so after a SIGKILL the next runner (a redelivered task, the worker's start-up resume or the
beat sweep) takes over at once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.audit.models import Outcome
from apps.audit.services import audit_record
from apps.core import metrics
from apps.core.connections import dedicated_connection
from apps.core.errors import KcmError
from apps.keychain.chain import find_key
from apps.keychain.errors import HsmUnavailable
from apps.keychain.models import CustomerKey, TenantKey, VersionState
from apps.rotation.errors import JobNotFound
from apps.rotation.models import ACTIVE_STATES, JobState, RewrapJob, RewrapLevel
from apps.rotation.rewrap import MAX_REPORTED_FAILURES, Children, children_of

logger = logging.getLogger(__name__)

MORE = "more"
COMPLETE = "complete"
BUSY = "busy"  # another runner holds the job

HSM_ATTEMPTS = 5  # consecutive HSM outages before a job fails (it can be resumed)
MAX_PASSES = 2  # extra passes over the children if some were somehow left behind


def _lock_key(job_id: UUID | str) -> int:
    return int.from_bytes(UUID(str(job_id)).bytes[:8], "big", signed=True)


class JobLock:
    """A job's session-level advisory lock, held on a connection of its own straight to
    PostgreSQL (KCM_DATABASE_DIRECT_URL). The batches' transactions may go through a
    transaction-pooling PgBouncer, where a session lock taken on one server connection would
    stay behind when the transaction moves on; a direct session outlives them and dies with the
    process (the lock with it) if the runner is killed."""

    def __init__(self, job_id: UUID | str) -> None:
        self.key = _lock_key(job_id)
        self.conn: Any = None

    def acquire(self) -> bool:
        self.conn = dedicated_connection(application_name="kcm-rewrap-lock", direct=True)
        row = self.conn.execute("SELECT pg_try_advisory_lock(%s)", [self.key]).fetchone()
        return bool(row and row[0])

    def check(self) -> None:
        """Raise if the lock's session is gone (PostgreSQL restarted, say): the lock went with
        it, and another runner may take the job."""
        self.conn.execute("SELECT 1")

    def release(self) -> None:
        if self.conn is not None:
            self.conn.close()  # ends the session, and the lock with it
            self.conn = None


@contextlib.contextmanager
def job_lock(job_id: UUID | str, *, holder: list[JobLock] | None = None) -> Iterator[bool]:
    """Hold the job's lock (see JobLock) if free; yields whether we got it."""
    lock = JobLock(job_id)
    try:
        got = lock.acquire()
        if got and holder is not None:
            holder.append(lock)
        yield got
    finally:
        lock.release()


def job_runner_alive(job_id: UUID | str) -> bool:
    """Whether some process is running the job right now."""
    with job_lock(job_id) as free:
        return not free


class _Run:
    """What one runner keeps between its batches: its start and count (for the rate), and the
    job's children (versions loaded once; the keys' states are read again every batch)."""

    def __init__(self, lock: JobLock | None = None) -> None:
        self.lock = lock
        self.started = time.monotonic()
        self.count = 0
        self.children: Children | None = None

    def children_of(self, job: RewrapJob) -> Children:
        if self.children is None:
            self.children = children_of(job)
        else:
            self.children.reload_keys()
        return self.children

    def rate(self, handled: int) -> float:
        self.count += handled
        elapsed = time.monotonic() - self.started
        return self.count / elapsed if elapsed > 0 else 0.0


def rewrap_job_run(*, job_id: UUID | str) -> str:
    """Run a job to its end in this process and return its final state (or "busy" if another
    process runs it). Safe to call any number of times, concurrently, or after a crash."""
    held: list[JobLock] = []
    with job_lock(job_id, holder=held) as mine:
        if not mine:
            return BUSY
        state = _job_begin(job_id)
        if state != JobState.RUNNING:
            return state
        with metrics.REWRAP_JOBS_RUNNING.track_inprogress():
            return _run_to_end(job_id, held[0])


def _run_to_end(job_id: UUID | str, lock: JobLock) -> str:
    run, outages = _Run(lock), 0
    while True:
        try:
            step = rewrap_job_run_batch(job_id=job_id, run=run)
            if step == COMPLETE:
                step = _job_complete(job_id)
        except HsmUnavailable as exc:
            outages += 1
            if outages >= HSM_ATTEMPTS:
                return _job_fail(job_id, code=exc.code, detail=exc.detail)
            logger.warning("rewrap job %s: HSM unavailable, retrying", job_id)
            time.sleep(min(30.0, 0.5 * 2**outages))
            continue
        except KcmError as exc:  # the chain above stopped being usable, or vanished
            return _job_fail(job_id, code=exc.code, detail=exc.detail)
        outages = 0
        if step != MORE:
            return step
        if settings.KCM_REWRAP_BATCH_PAUSE_MS:
            time.sleep(settings.KCM_REWRAP_BATCH_PAUSE_MS / 1000)


def rewrap_job_run_batch(*, job_id: UUID | str, run: _Run | None = None) -> str:
    """Move the next batch of children in one transaction with the job's cursor and counts.
    Returns "more", "complete" (nothing left after the cursor) or the state of a job that is
    no longer running (cancelled meanwhile, say)."""
    with transaction.atomic():
        # Not waiting for the disk here is safe: a batch lost in a database crash is lost with
        # the cursor that counted it, and is simply done again. Nothing outside the database
        # relies on a batch before the retirement, whose synchronous commit flushes every
        # batch committed before it.
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
        job = RewrapJob.objects.select_for_update().get(pk=job_id)
        if job.state != JobState.RUNNING:
            return job.state
        if run is not None and run.lock is not None:
            run.lock.check()
        children = run.children_of(job) if run is not None else children_of(job)
        children.ensure_usable()
        result = children.run_batch(after=job.cursor, limit=settings.KCM_REWRAP_BATCH_SIZE)
        if result is None:
            return COMPLETE
        handled = sum(result.by_parent.values())
        job.cursor = result.last_pk
        job.failed += len(result.failures)
        job.done += handled - len(result.failures)
        if result.failures:
            job.error = _with_failures(job.error, result.failures)
        if job.dry_run:
            census = job.report.setdefault("children_by_parent_version", {})
            for version, count in result.by_parent.items():
                census[str(version)] = census.get(str(version), 0) + count
        job.heartbeat_at = timezone.now()
        if run is not None:
            job.rate = run.rate(handled)
        job.save(
            update_fields=["cursor", "done", "failed", "error", "report", "heartbeat_at", "rate"]
        )
    _count_children(job, handled - len(result.failures), len(result.failures))
    return MORE


def _count_children(job: RewrapJob, moved: int, failed: int) -> None:
    labels = (metrics.tenant_label(), job.level)
    metrics.REWRAP_CHILDREN.labels(*labels, "checked" if job.dry_run else "rewrapped").inc(moved)
    if failed:
        metrics.REWRAP_CHILDREN.labels(*labels, "failed").inc(failed)


def _count_finished(job: RewrapJob) -> None:
    metrics.REWRAP_JOBS_FINISHED.labels(metrics.tenant_label(), job.level, job.state).inc()


def _with_failures(error: dict[str, Any], failures: list[dict[str, Any]]) -> dict[str, Any]:
    error = dict(error)
    listed = error.setdefault("children", [])
    by_code = error.setdefault("by_code", {})
    by_parent = error.setdefault("by_parent_version", {})
    for failure in failures:
        by_code[failure["code"]] = by_code.get(failure["code"], 0) + 1
        parent = str(failure["parent"])
        by_parent[parent] = by_parent.get(parent, 0) + 1
        if "child" in failure and len(listed) < MAX_REPORTED_FAILURES:
            listed.append(failure)
    error.setdefault("code", "children_failed")
    error["detail"] = (
        f"{sum(by_code.values())} children could not be unwrapped under their current parent "
        "version; they stay there, and so does that version."
    )
    return error


def _job_begin(job_id: UUID | str) -> str:
    with transaction.atomic():
        job = RewrapJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            raise JobNotFound()
        if job.state == JobState.QUEUED:
            job.state = JobState.RUNNING
            job.started_at = job.started_at or timezone.now()
            job.heartbeat_at = timezone.now()
            job.save(update_fields=["state", "started_at", "heartbeat_at"])
        return job.state


def _job_complete(job_id: UUID | str) -> str:
    """No child is left after the cursor: check that none is left at all, retire what nothing
    references any more, and finish."""
    job = RewrapJob.objects.get(pk=job_id)
    if job.state != JobState.RUNNING:
        return job.state
    children = children_of(job)
    if job.dry_run:
        versions = sorted(children.versions.values(), key=lambda v: v.version)
        key = find_key(job.key_id)
        return _job_finish(
            job_id,
            report={
                "would_rotate": {"from": key.primary_version, "to": key.primary_version + 1},
                "would_rewrap": job.done,
                "would_fail": job.failed,
                # Every enabled version, once its children have moved: all but those holding
                # children that would fail.
                "would_retire": [
                    v.version
                    for v in versions
                    if v.state == VersionState.ENABLED
                    and str(v.version) not in job.error.get("by_parent_version", {})
                ],
            },
        )
    left = children.count_pending()
    if left and not job.failed and job.passes < MAX_PASSES:
        with transaction.atomic():
            RewrapJob.objects.filter(pk=job_id, state=JobState.RUNNING).update(
                cursor=0, passes=job.passes + 1, heartbeat_at=timezone.now()
            )
        return MORE
    if left:
        return _job_fail(
            job_id,
            code=job.error.get("code", "children_left"),
            detail=job.error.get("detail", f"{left} children are still under older versions."),
        )
    # Retiring destroys nothing: an L1 version's HSM object stays (a request that read a
    # tenant-key row before the last batch can still unwrap it, and so can a database restored
    # from a backup taken before the rewrap). Only a scheduled deletion, after its waiting
    # period, destroys key material.
    return _job_finish(job_id, report={"retired_versions": _retire_unreferenced(job)})


def _retire_unreferenced(job: RewrapJob) -> list[int]:
    """Retire, under the key's row lock, each older version no child with material references
    (it wraps nothing new; its material is kept). Its commit is synchronous, so every batch
    before it is durable with it."""
    model = CustomerKey if job.level == RewrapLevel.L1 else TenantKey
    with transaction.atomic():
        key = model.objects.select_for_update().get(pk=job.key_id)
        retired = []
        for version in children_of(job).retirable():
            if version.version == key.primary_version:
                continue
            version.state = VersionState.RETIRED
            version.save(update_fields=["state"])
            audit_record(
                action="rotation.version.retire",
                target=str(key.pk),
                target_version=version.version,
                details={"level": job.level, "job": str(job.pk)},
            )
            retired.append(version.version)
    return retired


def _job_finish(job_id: UUID | str, *, report: dict[str, Any]) -> str:
    with transaction.atomic():
        job = RewrapJob.objects.select_for_update().get(pk=job_id)
        if job.state != JobState.RUNNING:
            return job.state
        now = timezone.now()
        job.state = JobState.SUCCEEDED
        job.finished_at = job.heartbeat_at = now
        job.report = {**job.report, **report}
        job.save(update_fields=["state", "finished_at", "heartbeat_at", "report"])
        audit_record(
            action="rotation.job.finish",
            target=str(job.key_id),
            target_version=job.target_version,
            details={
                "job": str(job.pk),
                "level": job.level,
                "dry_run": job.dry_run,
                "done": job.done,
                "failed": job.failed,
                **report,
            },
        )
    _count_finished(job)
    return JobState.SUCCEEDED


def _job_fail(job_id: UUID | str, *, code: str, detail: str) -> str:
    with transaction.atomic():
        job = RewrapJob.objects.select_for_update().get(pk=job_id)
        if job.state not in ACTIVE_STATES:
            return job.state
        job.state = JobState.FAILED
        job.finished_at = job.heartbeat_at = timezone.now()
        job.error = {**job.error, "code": code, "detail": detail}
        job.save(update_fields=["state", "finished_at", "heartbeat_at", "error"])
        audit_record(
            action="rotation.job.finish",
            outcome=Outcome.ERROR,
            target=str(job.key_id),
            target_version=job.target_version,
            error_code=code,
            details={
                "job": str(job.pk),
                "level": job.level,
                "done": job.done,
                "failed": job.failed,
            },
        )
    _count_finished(job)
    return JobState.FAILED
