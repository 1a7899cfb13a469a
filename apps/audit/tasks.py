"""Celery tasks for the audit log: thin wrappers over one service each."""

from __future__ import annotations

from celery import shared_task

from apps.audit import export, services
from apps.audit.context import AuditContext, reset_context, set_context


@shared_task(name="apps.audit.tasks.checkpoint_all")
def checkpoint_all() -> int:
    token = set_context(AuditContext(actor="system:audit-checkpoints"))
    try:
        return services.audit_checkpoint_all()
    finally:
        reset_context(token)


@shared_task(name="apps.audit.tasks.export_run")
def export_run(export_id: str) -> str:
    """Runs in the tenant's schema (tenant-schemas-celery carries it from the sender)."""
    token = set_context(AuditContext(actor="system:audit-export"))
    try:
        return str(export.export_run(export_id=export_id).state)
    finally:
        reset_context(token)


@shared_task(name="apps.audit.tasks.seal_all")
def seal_all() -> int:
    return services.audit_seal_all()
