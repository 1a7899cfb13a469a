"""Celery tasks: thin wrappers that take ids and call one service."""

from __future__ import annotations

from celery import shared_task
from django_tenants.utils import tenant_context

from apps.audit.context import AuditContext, reset_context, set_context
from apps.keychain import byok, hyok, services, version_deletion
from apps.tenants.selectors import tenants_for_upkeep
from apps.tenants.shredding import terminated_roots_sweep


@shared_task(name="apps.keychain.tasks.deletion_sweep")
def deletion_sweep() -> dict[str, list[str]]:
    """Destroy every key and L1 version, in every active tenant, whose deletion date has
    passed, and the HSM objects of terminated tenants whose waiting period has passed: the ids
    of the keys ("<key id>/v<n>" for a version) and the handles of the objects destroyed, per
    tenant."""
    destroyed: dict[str, list[str]] = {}
    token = set_context(AuditContext(actor="system:deletion-sweep"))
    try:
        for tenant in tenants_for_upkeep():
            with tenant_context(tenant):
                done = services.deletion_sweep() + version_deletion.l1_version_deletion_sweep()
            if done:
                destroyed[tenant.slug] = done
        for slug, handles in terminated_roots_sweep().items():
            destroyed.setdefault(slug, []).extend(handles)
    finally:
        reset_context(token)
    return destroyed


@shared_task(name="apps.keychain.tasks.hyok_sync")
def hyok_sync() -> dict[str, dict[str, str]]:
    """Ask every HYOK key's manager about it and apply the answer (beat)."""
    states: dict[str, dict[str, str]] = {}
    for tenant in tenants_for_upkeep():
        with tenant_context(tenant):
            synced = hyok.hyok_sync_all()
        if synced:
            states[tenant.slug] = synced
    return states


@shared_task(name="apps.keychain.tasks.byok_sweep")
def byok_sweep() -> dict[str, dict[str, int]]:
    """Delete expired imported material and spent wrapping keys (beat)."""
    done: dict[str, dict[str, int]] = {}
    for tenant in tenants_for_upkeep():
        with tenant_context(tenant):
            result = byok.byok_sweep()
        if any(result.values()):
            done[tenant.slug] = result
    return done
