"""Celery tasks: thin wrappers that take ids and call one service."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django_tenants.utils import tenant_context

from apps.audit.context import AuditContext, reset_context, set_context
from apps.core.errors import KcmError
from apps.keychain import datakeys, services
from apps.tenants.models import Tenant, TenantStatus


@shared_task(name="apps.keychain.tasks.deletion_sweep")
def deletion_sweep() -> dict[str, list[str]]:
    """Destroy every key, in every active tenant, whose deletion date has passed."""
    destroyed: dict[str, list[str]] = {}
    token = set_context(AuditContext(actor="system:deletion-sweep"))
    try:
        tenants = Tenant.objects.filter(is_template=False, status=TenantStatus.ACTIVE)
        for tenant in tenants.exclude(schema_name="public"):
            with tenant_context(tenant):
                done = services.deletion_sweep()
            if done:
                destroyed[tenant.slug] = done
    finally:
        reset_context(token)
    return destroyed


@shared_task(name="apps.keychain.tasks.service_key_probe")
def service_key_probe(service_key: str, ciphertext: str, context: dict[str, str]) -> dict[str, Any]:
    """Decrypt a data key in this worker (run inside the tenant's schema): reports whether the
    chain is usable from a worker process — used by operators and the kill-switch tests."""
    try:
        datakeys.run(
            service_key=service_key,
            operation="decrypt-data-key",
            item={"ciphertext": ciphertext, "context": context},
        )
    except KcmError as exc:
        return {"ok": False, "code": exc.code}
    return {"ok": True}
