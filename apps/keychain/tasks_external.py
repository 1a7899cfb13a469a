"""Celery tasks of customer-controlled L1s: thin loops over the active tenants."""

from __future__ import annotations

from celery import shared_task
from django_tenants.utils import tenant_context

from apps.keychain import byok, hyok
from apps.tenants.models import Tenant, TenantStatus


def _active_tenants() -> list[Tenant]:
    return list(
        Tenant.objects.filter(is_template=False, status=TenantStatus.ACTIVE).exclude(
            schema_name="public"
        )
    )


@shared_task(name="apps.keychain.tasks_external.hyok_sync")
def hyok_sync() -> dict[str, dict[str, str]]:
    """Ask every HYOK key's manager about it and apply the answer (beat)."""
    states: dict[str, dict[str, str]] = {}
    for tenant in _active_tenants():
        with tenant_context(tenant):
            synced = hyok.hyok_sync_all()
        if synced:
            states[tenant.slug] = synced
    return states


@shared_task(name="apps.keychain.tasks_external.byok_sweep")
def byok_sweep() -> dict[str, dict[str, int]]:
    """Delete expired imported material and spent wrapping keys (beat)."""
    done: dict[str, dict[str, int]] = {}
    for tenant in _active_tenants():
        with tenant_context(tenant):
            result = byok.byok_sweep()
        if any(result.values()):
            done[tenant.slug] = result
    return done
