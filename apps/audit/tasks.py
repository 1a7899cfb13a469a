"""Celery tasks for the audit log: thin wrappers over one service each. (The beat's seal and
checkpoints of every schema are apps.tenants.tasks': only tenants knows which are live.)"""

from __future__ import annotations

from celery import shared_task

from apps.audit import export, streaming
from apps.audit.context import AuditContext, reset_context, set_context


@shared_task(name="apps.audit.tasks.export_run")
def export_run(export_id: str) -> str:
    """Runs in the tenant's schema (tenant-schemas-celery carries it from the sender)."""
    token = set_context(AuditContext(actor="system:audit-export"))
    try:
        return str(export.export_run(export_id=export_id).state)
    finally:
        reset_context(token)


@shared_task(name="apps.audit.tasks.audit_stream_sink")
def audit_stream_sink(sink_id: str, tenant: str) -> str:
    """Deliver one sink (in its tenant's schema): one task per sink, so a sink that is down
    holds up only its own task, for at most KCM_AUDIT_SINK_TIMEOUT_SECONDS per round."""
    return streaming.sink_deliver(sink_id, tenant=tenant)
