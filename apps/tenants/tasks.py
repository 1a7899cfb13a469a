"""Beat tasks that look after the audit log of every live schema: the platform's and each
tenant's (apps.audit sits below tenants, so it cannot list them itself)."""

from __future__ import annotations

from celery import shared_task
from django_tenants.utils import schema_context

from apps.audit.context import AuditContext, reset_context, set_context
from apps.audit.sealer import seal_here
from apps.audit.services import audit_checkpoint_here
from apps.audit.streaming import sinks_due
from apps.audit.tasks import audit_stream_sink
from apps.tenants.selectors import tenants_for_upkeep


def _live_schemas() -> list[str]:
    return ["public", *(tenant.schema_name for tenant in tenants_for_upkeep())]


@shared_task(name="apps.tenants.tasks.audit_seal_all")
def audit_seal_all() -> int:
    """Chain what processes that died (or are idle) left pending; the number chained."""
    sealed = 0
    for schema in _live_schemas():
        with schema_context(schema):
            sealed += seal_here()
    return sealed


@shared_task(name="apps.tenants.tasks.audit_checkpoint_all")
def audit_checkpoint_all() -> int:
    """Sign the head of every chain that moved since its last checkpoint; the number signed."""
    token = set_context(AuditContext(actor="system:audit-checkpoints"))
    try:
        signed = 0
        for schema in _live_schemas():
            with schema_context(schema):
                if audit_checkpoint_here():
                    signed += 1
        return signed
    finally:
        reset_context(token)


@shared_task(name="apps.tenants.tasks.audit_stream_all")
def audit_stream_all() -> int:
    """Queue one delivery task per due audit sink of every live schema (the platform log's
    sinks are labelled "platform"); the number queued."""
    queued = 0
    schemas = [("public", "platform")]
    schemas += [(tenant.schema_name, tenant.slug) for tenant in tenants_for_upkeep()]
    for schema, slug in schemas:
        with schema_context(schema):
            for sink_id in sinks_due():
                # Sent in the schema: tenant-schemas-celery runs the task there.
                audit_stream_sink.delay(sink_id, slug)
                queued += 1
    return queued
