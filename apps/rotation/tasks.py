"""Celery tasks: thin wrappers that take ids and call one service.

Every task here is idempotent, so Celery's late acknowledgement (a task whose worker dies is
delivered again) is safe. Brokers that lose an unacknowledged message when the whole worker
dies (the embedded filesystem broker does) are covered by `rotation_resume`, run by every
worker as it starts, and by the beat sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import shared_task
from celery.signals import worker_ready
from django.db import connections
from django_tenants.utils import tenant_context

from apps.audit.context import AuditContext, reset_context, set_context
from apps.rotation import runner, sweep
from apps.tenants.models import Tenant

ACTOR = "system:rotation"
logger = logging.getLogger(__name__)


@contextmanager
def _as_rotation_worker() -> Iterator[None]:
    token = set_context(AuditContext(actor=ACTOR))
    try:
        yield
    finally:
        reset_context(token)


@shared_task(name="apps.rotation.tasks.rewrap_job_run")
def rewrap_job_run(schema_name: str, job_id: str) -> str:
    """Run one rewrap job to its end (or until cancelled) in its tenant's schema."""
    tenant = Tenant.objects.filter(schema_name=schema_name).first()
    if tenant is None:
        return "tenant_gone"
    with tenant_context(tenant), _as_rotation_worker():
        return runner.rewrap_job_run(job_id=job_id)


@shared_task(name="apps.rotation.tasks.rotation_sweep")
def rotation_sweep() -> dict[str, Any]:
    """Beat: start due rotations in every tenant; requeue stalled jobs and platform runs."""
    with _as_rotation_worker():
        return sweep.rotation_sweep().as_dict()


@shared_task(name="apps.rotation.tasks.rotation_resume")
def rotation_resume() -> dict[str, int]:
    """Requeue every active job and platform run that no process is running."""
    with _as_rotation_worker():
        # Runs first: a run still fanning out starts jobs, the jobs only finish themselves.
        runs = sweep.platform_runs_resume()
        return {"runs": runs, "jobs": sweep.rotation_resume()}


@shared_task(name="apps.rotation.tasks.platform_rotation_run")
def platform_rotation_run(run_id: str) -> str:
    """Fan a platform-wide rotation out to every active tenant."""
    with _as_rotation_worker():
        return sweep.platform_rotation_run(run_id=run_id)


@worker_ready.connect
def _resume_when_a_worker_starts(**kwargs: Any) -> None:
    """Requeue what a killed worker left without a runner, here and now: queued instead, this
    would wait behind every message already in the broker, and a worker killed again before
    reaching it would leave a platform run stuck for longer still."""
    try:
        rotation_resume()
    except Exception:  # a worker must start even if the database is down; the sweep retries
        logger.exception("could not requeue rotation work at worker start")
    finally:
        connections.close_all()  # the pool's processes open their own
