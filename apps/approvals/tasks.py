"""Celery task: expire every tenant's approval requests that passed their expiry, so that the
audit log records `approval.expire` even for a request nobody looks at again."""

from __future__ import annotations

from celery import shared_task
from django_tenants.utils import tenant_context

from apps.approvals.services import expire_due
from apps.audit.context import AuditContext, reset_context, set_context
from apps.tenants.selectors import tenants_for_upkeep


@shared_task(name="apps.approvals.tasks.approvals_expire_all")
def approvals_expire_all() -> int:
    """Expire due requests in every live tenant; how many expired."""
    token = set_context(AuditContext(actor="system:approvals"))
    expired = 0
    try:
        for tenant in tenants_for_upkeep():
            with tenant_context(tenant):
                expired += expire_due()
    finally:
        reset_context(token)
    return expired
