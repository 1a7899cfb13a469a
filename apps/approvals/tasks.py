"""Celery task: expire every tenant's approval requests, and the platform's, that passed their
expiry, so that the audit log records `approval.expire` even for a request nobody looks at
again."""

from __future__ import annotations

from celery import shared_task
from django_tenants.utils import schema_context, tenant_context

from apps.approvals.ledgers import PLATFORM
from apps.approvals.services import expire_due
from apps.audit.context import AuditContext, reset_context, set_context
from apps.tenants.selectors import tenants_for_upkeep


@shared_task(name="apps.approvals.tasks.approvals_expire_all")
def approvals_expire_all() -> int:
    """Expire due requests in every live tenant and on the platform; how many expired."""
    token = set_context(AuditContext(actor="system:approvals"))
    expired = 0
    try:
        with schema_context("public"):
            expired += expire_due(ledger=PLATFORM)
        for tenant in tenants_for_upkeep():
            with tenant_context(tenant):
                expired += expire_due()
    finally:
        reset_context(token)
    return expired
