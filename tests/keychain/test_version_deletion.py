"""Scheduled deletion of one retired L1 version: the API, the console, the sweep, refusals
(primary, still wrapping a tenant key, wrong state, bad waiting period, wrong tenant or role).
tests/security/test_l1_version_deletion.py checks what it erases."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from django.test import Client
from django.utils import timezone
from django_tenants.utils import tenant_context

from apps.audit.models import AuditEvent
from apps.core.roles import Role
from apps.keychain import version_deletion
from apps.keychain.models import CustomerKeyVersion, VersionState
from apps.keystores.registry import platform_keystore
from apps.rotation import runner
from apps.rotation.models import JobState, RewrapJob
from tests.helpers import Api, assert_problem
from tests.keychain.byokkit import Byok

HOST = "acme.localhost"


def _rotated(chain: Any, world: Any, *, rewrap: bool = True) -> tuple[str, Api]:
    """acme's L1 'root' rotated (v2 primary); with `rewrap`, its job run to the end (v1
    retired). Returns the L1's id and the key admin."""
    made = chain()
    l1_id, admin = made["l1"]["id"], made["admin"]
    assert admin.post(f"/api/v1/rotation/keys/{l1_id}/rotate/", {}).status_code == 202
    if rewrap:
        with tenant_context(world.tenants["acme"]):
            job = RewrapJob.objects.get(key_id=l1_id)
            assert runner.rewrap_job_run(job_id=job.pk) == JobState.SUCCEEDED
            assert CustomerKeyVersion.objects.get(version=1).state == VersionState.RETIRED
    return l1_id, admin


def _v1(world: Any) -> CustomerKeyVersion:
    with tenant_context(world.tenants["acme"]):
        return CustomerKeyVersion.objects.get(version=1)


def test_a_key_admin_schedules_and_cancels_the_deletion_of_a_retired_version(
    chain: Any, world: Any
) -> None:
    l1_id, admin = _rotated(chain, world)
    url = f"/api/v1/keys/{l1_id}/versions/1/"
    scheduled = admin.post(url + "schedule-deletion/", {"pending_days": 7})
    assert scheduled.status_code == 200, scheduled.content
    body = scheduled.json_body
    assert (body["key_id"], body["version"], body["state"]) == (l1_id, 1, "PENDING_DELETION")
    assert body["deletion_date"] is not None
    tree = admin.get("/api/v1/keys/").json_body["results"][0]
    assert [(v["version"], v["state"]) for v in tree["versions"]] == [
        (1, "PENDING_DELETION"),
        (2, "ENABLED"),
    ]
    assert_problem(
        admin.post(url + "schedule-deletion/", {"pending_days": 7}), 409, "invalid_key_state"
    )

    cancelled = admin.post(url + "cancel-deletion/", {})
    assert cancelled.status_code == 200
    assert (cancelled.json_body["state"], cancelled.json_body["deletion_date"]) == ("RETIRED", None)
    assert_problem(admin.post(url + "cancel-deletion/", {}), 409, "invalid_key_state")
    with tenant_context(world.tenants["acme"]):
        events = AuditEvent.objects.filter(action__startswith="key.version.", outcome="success")
        assert [(e.action, e.target, e.target_version) for e in events.order_by("seq")] == [
            ("key.version.schedule_deletion", l1_id, 1),
            ("key.version.cancel_deletion", l1_id, 1),
        ]


def test_the_primary_version_and_a_version_still_wrapping_are_refused(
    chain: Any, world: Any
) -> None:
    l1_id, admin = _rotated(chain, world, rewrap=False)
    # The rewrap has not run: the tenant key's version is still wrapped under v1.
    refused = admin.post(f"/api/v1/keys/{l1_id}/versions/1/schedule-deletion/", {"pending_days": 7})
    assert_problem(refused, 409, "key_version_in_use")
    assert "finish the rewrap" in refused.json_body["detail"]
    assert_problem(
        admin.post(f"/api/v1/keys/{l1_id}/versions/2/schedule-deletion/", {"pending_days": 7}),
        409,
        "key_version_primary",
    )
    assert _v1(world).state == VersionState.ENABLED


def test_bad_waiting_periods_versions_and_keys_are_refused(chain: Any, world: Any) -> None:
    l1_id, admin = _rotated(chain, world)
    url = f"/api/v1/keys/{l1_id}/versions/1/schedule-deletion/"
    for days in (6, 31):
        assert_problem(admin.post(url, {"pending_days": days}), 400, "invalid_pending_days")
    assert_problem(admin.post(url, {}), 400, "validation_error")
    for version in (9, 0, 2**31, 10**30):  # none, and beyond what a version number can be
        assert_problem(
            admin.post(
                f"/api/v1/keys/{l1_id}/versions/{version}/schedule-deletion/", {"pending_days": 7}
            ),
            404,
            "key_version_not_found",
        )
    with tenant_context(world.tenants["acme"]):
        l2_id = str(CustomerKeyVersion.objects.get(version=1).key.tenant_key.pk)
    assert_problem(
        admin.post(f"/api/v1/keys/{l2_id}/versions/1/schedule-deletion/", {"pending_days": 7}),
        404,
        "key_not_found",
    )
    assert _v1(world).state == VersionState.RETIRED


def test_another_tenant_and_other_roles_cannot_touch_a_version(
    chain: Any, world: Any, api: Any
) -> None:
    l1_id, _ = _rotated(chain, world)
    url = f"/api/v1/keys/{l1_id}/versions/1/schedule-deletion/"
    assert_problem(
        api("globex", Role.KEY_ADMIN).post(url, {"pending_days": 7}), 404, "key_not_found"
    )
    for role in (Role.KEY_USER, Role.TENANT_ADMIN, Role.AUDITOR):
        refused = api("acme", role).post(url, {"pending_days": 7})
        assert refused.status_code == 403, (role, refused.content)
    assert _v1(world).state == VersionState.RETIRED


def test_the_sweep_destroys_a_version_only_after_its_date(chain: Any, world: Any) -> None:
    l1_id, admin = _rotated(chain, world)
    admin.post(f"/api/v1/keys/{l1_id}/versions/1/schedule-deletion/", {"pending_days": 7})
    handle = _v1(world).handle
    with tenant_context(world.tenants["acme"]):
        early = timezone.now() + timedelta(days=6, hours=23)
        assert version_deletion.l1_version_deletion_sweep(now=early) == []
        assert platform_keystore().exists(handle)
        late = timezone.now() + timedelta(days=7, minutes=1)
        assert version_deletion.l1_version_deletion_sweep(now=late) == [f"{l1_id}/v1"]
        assert version_deletion.l1_version_deletion_sweep(now=late) == []
        destroyed = AuditEvent.objects.get(action="key.version.destroy")
        assert (destroyed.target, destroyed.target_version) == (l1_id, 1)
        assert destroyed.details["keystore_object_destroyed"] is True
    assert not platform_keystore().exists(handle)
    assert _v1(world).state == VersionState.DESTROYED
    # Destroyed is final: neither a cancel nor a new schedule brings it back.
    url = f"/api/v1/keys/{l1_id}/versions/1/"
    assert_problem(admin.post(url + "cancel-deletion/", {}), 409, "invalid_key_state")
    assert_problem(
        admin.post(url + "schedule-deletion/", {"pending_days": 7}), 409, "invalid_key_state"
    )


def test_the_console_versions_table_schedules_and_cancels(chain: Any, world: Any) -> None:
    l1_id, _ = _rotated(chain, world)
    client = Client(HTTP_HOST=HOST)
    client.force_login(world.users[("acme", Role.KEY_ADMIN)])
    page = client.get("/keys/").content.decode()
    assert 'data-testid="l1-versions"' in page
    assert f"/keys/{l1_id}/versions/1/schedule-deletion/" in page
    assert f"/keys/{l1_id}/versions/2/schedule-deletion/" not in page  # the primary: no button

    done = client.post(
        f"/keys/{l1_id}/versions/1/schedule-deletion/", {"pending_days": "7"}, follow=True
    ).content.decode()
    assert "Deletion of version 1 scheduled in 7 days." in done
    assert f"/keys/{l1_id}/versions/1/cancel-deletion/" in done
    assert _v1(world).state == VersionState.PENDING_DELETION
    done = client.post(f"/keys/{l1_id}/versions/1/cancel-deletion/", follow=True).content.decode()
    assert "Deletion of version 1 cancelled" in done
    assert _v1(world).state == VersionState.RETIRED

    refused = client.post(
        f"/keys/{l1_id}/versions/2/schedule-deletion/", {"pending_days": "7"}, follow=True
    ).content.decode()
    assert "primary version" in refused

    auditor = Client(HTTP_HOST=HOST)
    auditor.force_login(world.users[("acme", Role.AUDITOR)])
    page = auditor.get("/keys/").content.decode()
    assert 'data-testid="l1-versions"' in page and "versions/1/schedule-deletion" not in page
    assert auditor.post(f"/keys/{l1_id}/versions/1/schedule-deletion/").status_code == 403


def test_a_destroyed_byok_version_cannot_be_imported_back(byok_api: Byok, world: Any) -> None:
    l1 = byok_api.create()
    first, second = os.urandom(32), os.urandom(32)
    assert byok_api.import_material(l1["id"], first).status_code == 200
    assert byok_api.import_material(l1["id"], second, new_version=True).status_code == 200
    rewrap = byok_api.admin.post(f"/api/v1/rotation/keys/{l1['id']}/rewrap/", {})
    assert rewrap.status_code == 202, rewrap.content
    with tenant_context(world.tenants["acme"]):
        assert runner.rewrap_job_run(job_id=rewrap.json_body["id"]) == JobState.SUCCEEDED
    url = f"/api/v1/keys/{l1['id']}/versions/1/schedule-deletion/"
    assert byok_api.admin.post(url, {"pending_days": 7}).status_code == 200
    with tenant_context(world.tenants["acme"]):
        late = timezone.now() + timedelta(days=8)
        assert version_deletion.l1_version_deletion_sweep(now=late) == [f"{l1['id']}/v1"]

    again = byok_api.import_material(l1["id"], first)
    assert_problem(again, 409, "invalid_key_state")
    assert "destroyed" in again.json_body["detail"]
    versions = byok_api.material(l1["id"])["versions"]
    assert [(v["version"], v["state"]) for v in versions] == [(1, "DESTROYED"), (2, "ENABLED")]
