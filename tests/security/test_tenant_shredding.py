"""Issue 11, finding 4: terminating a tenant drops its schema at once, and crypto-shreds it: the
tenant's L1 objects in the HSM are destroyed once the waiting period has passed, never before
(until then a backup can still bring the tenant back). Real PostgreSQL and SoftHSM2."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from django_tenants.utils import schema_exists, tenant_context

from apps.audit.models import AuditEvent
from apps.keychain import services as keychain_services
from apps.keychain import tasks as keychain_tasks
from apps.keychain.models import CustomerKeyVersion
from apps.keystores.registry import platform_keystore
from apps.tenants import services as tenant_services
from apps.tenants.models import Tenant


def _travel(monkeypatch: Any, days: float) -> None:
    """Every `timezone.now()` from here on answers `days` from now."""
    moment = timezone.now() + timedelta(days=days)
    monkeypatch.setattr(timezone, "now", lambda: moment)


@pytest.fixture
def doomed(world: Any) -> tuple[Tenant, list[str]]:
    """A tenant with two L1s in the HSM (one rotated: three HSM objects) and a service key."""
    tenant = tenant_services.tenant_create(slug="doomed")
    with tenant_context(tenant):
        first = keychain_services.customer_key_create(name="root")
        keychain_services.customer_key_create(name="second")
        keychain_services.service_key_create(name="payments", customer_key_id=first.pk)
        keychain_services.key_rotate(key_id=first.pk)
        handles = sorted(CustomerKeyVersion.objects.values_list("handle", flat=True))
    connection.set_schema_to_public()  # type: ignore[attr-defined]
    # The keys were made in this test's transaction: check their deferred foreign keys now,
    # or PostgreSQL refuses to drop their tables in the same transaction.
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    assert len(handles) == 3 and all(platform_keystore().exists(h) for h in handles)
    return tenant, handles


def test_terminating_a_tenant_destroys_its_hsm_keys_after_the_waiting_period_only(
    doomed: tuple[Tenant, list[str]], monkeypatch: Any
) -> None:
    tenant, handles = doomed
    keystore = platform_keystore()
    tenant_services.tenant_terminate(tenant=tenant, reason="contract ended")
    assert not schema_exists(tenant.schema_name)

    # During the waiting period the sweep runs and the HSM objects stay.
    keychain_tasks.deletion_sweep()
    assert all(keystore.exists(h) for h in handles)
    _travel(monkeypatch, settings.KCM_DELETION_MAX_DAYS - 0.01)
    keychain_tasks.deletion_sweep()
    assert all(keystore.exists(h) for h in handles)

    # Once it has passed, the next sweep shreds them: every L2 they wrapped, wherever a copy
    # of it survives (old row versions, WAL, backups), is unrecoverable.
    monkeypatch.undo()
    _travel(monkeypatch, settings.KCM_DELETION_MAX_DAYS + 0.01)
    swept = keychain_tasks.deletion_sweep()
    assert not any(keystore.exists(h) for h in handles)
    assert sorted(swept.get("doomed", [])) == handles
    shred = AuditEvent.objects.filter(action="tenant.shred", target="doomed").get()
    assert shred.details == {"objects": 3}
    assert keychain_tasks.deletion_sweep().get("doomed") is None  # done once


def test_termination_records_what_will_be_destroyed_and_when(
    doomed: tuple[Tenant, list[str]],
) -> None:
    tenant, _ = doomed
    before = timezone.now()
    tenant_services.tenant_terminate(tenant=tenant)
    event = AuditEvent.objects.filter(action="tenant.terminate", target="doomed").get()
    assert event.details["hsm_objects_to_destroy"] == 3
    due = event.details["destroy_after"]
    waiting = timedelta(days=settings.KCM_DELETION_MAX_DAYS)
    assert (before + waiting).isoformat() <= due <= (timezone.now() + waiting).isoformat()
