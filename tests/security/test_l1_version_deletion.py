"""Issue 11, findings 3 and 4: rotation only retires an L1 version; scheduled deletion of that
one version, after its waiting period, is what destroys its HSM object. Never while a tenant
key is still wrapped under it, never before the date, and a cancel during the wait gives it
back. Real PostgreSQL and SoftHSM2; the beat task's own sweep."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from django_tenants.utils import tenant_context

from apps.core.roles import Role
from apps.keychain import chain
from apps.keychain import services as keychain_services
from apps.keychain import tasks as keychain_tasks
from apps.keychain.errors import KeyVersionPendingDeletion
from apps.keychain.models import CustomerKey, CustomerKeyVersion, TenantKeyVersion, VersionState
from apps.keystores.registry import platform_keystore
from apps.rotation import runner
from apps.rotation import services as rotation_services
from apps.rotation.models import JobState
from tests.e2e import rotationkit
from tests.helpers import Api, assert_problem


def _travel(monkeypatch: Any, days: float) -> None:
    """Every `timezone.now()` from here on answers `days` from now."""
    moment = timezone.now() + timedelta(days=days)
    monkeypatch.setattr(timezone, "now", lambda: moment)


@pytest.fixture
def acme(world: Any, api: Any) -> Any:
    """acme with L1 'root' (in the HSM) → L2 → two service keys and a data key each."""
    tenant = world.tenants["acme"]
    with tenant_context(tenant):
        keychain_services.customer_key_create(name="root")
        names = ["payments", *rotationkit.bulk_service_keys(1)]
        keychain_services.service_key_create(name="payments")
        before = rotationkit.data_keys(names)
        l1 = CustomerKey.objects.get()
    return {"tenant": tenant, "l1": l1, "names": names, "before": before,
            "admin": api("acme", Role.KEY_ADMIN)}  # fmt: skip


def _rotate(acme: Any, *, rewrap: bool) -> None:
    with tenant_context(acme["tenant"]):
        job = rotation_services.rotation_start(key_id=acme["l1"].pk).job
        assert job is not None
        if rewrap:
            assert runner.rewrap_job_run(job_id=job.pk) == JobState.SUCCEEDED


def _v1() -> CustomerKeyVersion:
    return CustomerKeyVersion.objects.get(version=1)


def _schedule(admin: Api, l1: CustomerKey, days: int = 7) -> Any:
    return admin.post(f"/api/v1/keys/{l1.pk}/versions/1/schedule-deletion/", {"pending_days": days})


def test_a_version_a_tenant_key_is_still_wrapped_under_is_never_destroyed(
    acme: Any, monkeypatch: Any
) -> None:
    _rotate(acme, rewrap=False)  # the rewrap has not run: the L2 is still under v1
    assert_problem(_schedule(acme["admin"], acme["l1"]), 409, "key_version_in_use")
    with tenant_context(acme["tenant"]):
        handle = _v1().handle
        assert _v1().state == VersionState.ENABLED
        # Even one marked for deletion some other way (a race, an old build, a restore) is
        # checked again by the sweep, and kept.
        CustomerKeyVersion.objects.filter(version=1).update(
            state=VersionState.PENDING_DELETION, deletion_date=timezone.now()
        )
    _travel(monkeypatch, 1)
    swept = keychain_tasks.deletion_sweep()
    assert "acme" not in swept
    assert platform_keystore().exists(handle)
    with tenant_context(acme["tenant"]):
        assert _v1().state == VersionState.PENDING_DELETION
        assert TenantKeyVersion.objects.get().parent.version == 1


def test_after_the_wait_the_sweep_destroys_the_hsm_object_and_every_data_key_decrypts(
    acme: Any, monkeypatch: Any
) -> None:
    _rotate(acme, rewrap=True)
    with tenant_context(acme["tenant"]):
        after = rotationkit.data_keys(acme["names"])  # under the new primary, v2
        v1, v2 = _v1(), CustomerKeyVersion.objects.get(version=2)
        assert v1.state == VersionState.RETIRED
    assert _schedule(acme["admin"], acme["l1"]).status_code == 200
    keystore = platform_keystore()

    keychain_tasks.deletion_sweep()
    _travel(monkeypatch, 7 - 0.01)
    keychain_tasks.deletion_sweep()
    assert keystore.exists(v1.handle)  # not before its date

    monkeypatch.undo()
    _travel(monkeypatch, 7 + 0.01)
    swept = keychain_tasks.deletion_sweep()
    assert swept["acme"] == [f"{acme['l1'].pk}/v1"]
    assert not keystore.exists(v1.handle)
    assert keystore.exists(v2.handle)
    with tenant_context(acme["tenant"]):
        assert _v1().state == VersionState.DESTROYED
        # Made before the rotation (their L2 rewrapped under v2) and after it: all decrypt.
        everything = {"checked": 2, "ok": 2, "failures": {}}
        assert rotationkit.check_data_keys(acme["before"]) == everything
        assert rotationkit.check_data_keys(after) == everything


def test_during_the_wait_the_version_unwraps_nothing_and_a_cancel_restores_it(
    acme: Any, monkeypatch: Any
) -> None:
    with tenant_context(acme["tenant"]):
        # A tenant-key row as a backup from before the rewrap holds it: wrapped under v1.
        restored = TenantKeyVersion.objects.select_related("key", "parent").get()
    _rotate(acme, rewrap=True)
    assert _schedule(acme["admin"], acme["l1"]).status_code == 200
    with tenant_context(acme["tenant"]):
        restored.parent = _v1()
        with pytest.raises(KeyVersionPendingDeletion):
            chain.l2_unwrap(restored)
    _travel(monkeypatch, 6)
    cancelled = acme["admin"].post(f"/api/v1/keys/{acme['l1'].pk}/versions/1/cancel-deletion/", {})
    assert cancelled.status_code == 200 and cancelled.json_body["state"] == "RETIRED"
    keychain_tasks.deletion_sweep()
    monkeypatch.undo()
    _travel(monkeypatch, 31)
    keychain_tasks.deletion_sweep()
    with tenant_context(acme["tenant"]):
        restored.parent = _v1()
        assert platform_keystore().exists(restored.parent.handle)
        assert len(chain.l2_unwrap(restored)) == 32
        assert rotationkit.check_data_keys(acme["before"]) == {
            "checked": 2,
            "ok": 2,
            "failures": {},
        }
