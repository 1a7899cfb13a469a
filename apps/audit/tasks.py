"""Celery tasks for the audit log: thin wrappers over one service each. (The beat's seal and
checkpoints of every schema are apps.tenants.tasks': only tenants knows which are live.)"""

from __future__ import annotations

from celery import shared_task

from apps.audit import export
from apps.audit.context import AuditContext, reset_context, set_context


@shared_task(name="apps.audit.tasks.export_run")
def export_run(export_id: str) -> str:
    """Runs in the tenant's schema (tenant-schemas-celery carries it from the sender)."""
    token = set_context(AuditContext(actor="system:audit-export"))
    try:
        return str(export.export_run(export_id=export_id).state)
    finally:
        reset_context(token)
