"""Rewrap jobs at the service level, on PostgreSQL and SoftHSM2: what moves, what is retired,
and that a job interrupted anywhere finishes with nothing lost and nothing done twice."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.keychain import services as keychain_services
from apps.keychain.chain import l2_unwrap
from apps.keychain.models import (
    CustomerKeyVersion,
    ServiceKey,
    ServiceKeyVersion,
    TenantKeyVersion,
    VersionState,
)
from apps.keystores.registry import platform_keystore
from apps.rotation import runner, services
from apps.rotation.models import JobState, RewrapJob
from tests.e2e import rotationkit


class Rollback(Exception):
    """Raised inside a batch's transaction: the process 'dies' before the commit."""


def _wrapped() -> dict[int, bytes]:
    return {pk: bytes(w) for pk, w in ServiceKeyVersion.objects.values_list("pk", "wrapped")}


def _running(job: RewrapJob) -> RewrapJob:
    """The job as a worker that picked it up (and may then have died) leaves it."""
    RewrapJob.objects.filter(pk=job.pk).update(state=JobState.RUNNING)
    job.refresh_from_db()
    return job


def test_rotating_an_l2_moves_every_service_key_and_retires_the_old_version(
    make_chain: Any, settings: Any
) -> None:
    settings.KCM_REWRAP_BATCH_SIZE = 7
    chain = make_chain(service_keys=30)
    with chain.inside():
        before = rotationkit.data_keys(chain.names)
        start = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
        job = services.rotation_start(key_id=chain.l2_id).job
        assert job is not None and (job.total, job.state, job.target_version) == (30, "queued", 2)
        assert runner.rewrap_job_run(job_id=job.pk) == JobState.SUCCEEDED
        job.refresh_from_db()
        assert (job.done, job.failed, job.total, job.cursor > 0) == (30, 0, 30, True)
        assert job.started_at and job.finished_at and job.rate > 0
        assert job.report["retired_versions"] == [1]
        census = rotationkit.chain_census()
        assert census["l3_versions_by_parent"] == {"2": 30}
        assert census["l2_versions"] == {1: VersionState.RETIRED, 2: VersionState.ENABLED}
        assert rotationkit.check_data_keys(before) == {"checked": 30, "ok": 30, "failures": {}}
        events = AuditEvent.objects.filter(seq__gt=start).order_by("seq")
        assert [(e.action, e.target_version) for e in events] == [
            ("key.rotate", 2),
            ("rotation.job.start", 2),
            ("rotation.version.retire", 1),
            ("rotation.job.finish", 2),
        ]
        assert events.last().details["done"] == 30  # type: ignore[union-attr]


def test_rotating_an_l1_moves_every_tenant_key_version_and_keeps_the_old_hsm_object(
    make_chain: Any,
) -> None:
    chain = make_chain(service_keys=5)
    with chain.inside():
        before = rotationkit.data_keys(chain.names)
        # Two L2 versions first (v1 retired by its own job): both move under the new L1.
        l2_job = services.rotation_start(key_id=chain.l2_id).job
        assert l2_job is not None and runner.rewrap_job_run(job_id=l2_job.pk) == "succeeded"
        old_handle = CustomerKeyVersion.objects.get(version=1).handle
        # As a request holds it that read the row before the rewrap: under L1 v1.
        read_before = TenantKeyVersion.objects.select_related("key", "parent").get(version=2)
        job = services.rotation_start(key_id=chain.l1_id).job
        assert job is not None and job.level == "L1" and job.total == 2
        assert runner.rewrap_job_run(job_id=job.pk) == JobState.SUCCEEDED
        job.refresh_from_db()
        assert job.report == {"retired_versions": [1]}
        assert set(TenantKeyVersion.objects.values_list("parent__version", flat=True)) == {2}
        assert dict(CustomerKeyVersion.objects.values_list("version", "state")) == {
            1: VersionState.RETIRED,
            2: VersionState.ENABLED,
        }
        # Retired, not destroyed: it wraps nothing new but still unwraps what it wrapped.
        assert platform_keystore().exists(old_handle)
        assert read_before.parent.version == 1 and len(l2_unwrap(read_before)) == 32
        assert rotationkit.check_data_keys(before)["ok"] == 5


def test_a_batch_that_dies_before_its_commit_leaves_nothing_half_done(
    make_chain: Any, settings: Any
) -> None:
    settings.KCM_REWRAP_BATCH_SIZE = 4
    chain = make_chain(service_keys=10)
    with chain.inside():
        before = rotationkit.data_keys(chain.names)
        job = _running(services.rotation_start(key_id=chain.l2_id).job)  # type: ignore[arg-type]
        assert runner.rewrap_job_run_batch(job_id=job.pk) == runner.MORE
        after_one = _wrapped()
        with pytest.raises(Rollback), transaction.atomic():
            assert runner.rewrap_job_run_batch(job_id=job.pk) == runner.MORE
            raise Rollback
        assert _wrapped() == after_one
        job.refresh_from_db()
        assert (job.done, job.cursor) == (4, sorted(after_one)[3])
        assert rotationkit.chain_census()["l3_versions_by_parent"] == {"1": 6, "2": 4}
        # The next runner continues from the cursor: every child moved exactly once.
        assert runner.rewrap_job_run(job_id=job.pk) == JobState.SUCCEEDED
        job.refresh_from_db()
        assert (job.done, job.failed) == (10, 0)
        assert rotationkit.check_data_keys(before)["ok"] == 10


def test_running_a_finished_job_again_moves_nothing(make_chain: Any) -> None:
    chain = make_chain(service_keys=6)
    with chain.inside():
        job = services.rotation_start(key_id=chain.l2_id).job
        assert job is not None and runner.rewrap_job_run(job_id=job.pk) == "succeeded"
        assert runner.rewrap_job_run(job_id=job.pk) == "succeeded"
        moved = _wrapped()
        # A stale duplicate that finds the job running from the start (say, after a restore).
        RewrapJob.objects.filter(pk=job.pk).update(state=JobState.RUNNING, cursor=0)
        assert runner.rewrap_job_run(job_id=job.pk) == JobState.SUCCEEDED
        assert _wrapped() == moved
        job.refresh_from_db()
        assert job.done == 6


def test_only_one_runner_works_on_a_job_at_a_time(make_chain: Any) -> None:
    chain = make_chain(service_keys=3)
    held, release = threading.Event(), threading.Event()

    def other_runner(job_id: Any) -> None:
        with runner.job_lock(job_id) as got:
            assert got
            held.set()
            release.wait(10)
        connection.close()

    with chain.inside():
        job = services.rotation_start(key_id=chain.l2_id).job
        assert job is not None
        thread = threading.Thread(target=other_runner, args=(job.pk,))
        thread.start()
        try:
            assert held.wait(10)
            assert runner.job_runner_alive(job.pk)
            assert runner.rewrap_job_run(job_id=job.pk) == runner.BUSY
            assert services.rewrap_job_requeue(job_id=job.pk) is False
        finally:
            release.set()
            thread.join()
        assert not runner.job_runner_alive(job.pk)
        job.refresh_from_db()
        assert (job.state, job.done) == (JobState.QUEUED, 0)


def test_a_second_rotation_of_the_key_is_refused_naming_the_running_job(make_chain: Any) -> None:
    chain = make_chain()
    first = chain.admin.post(f"/api/v1/rotation/keys/{chain.l2_id}/rotate/", {})
    assert first.status_code == 202, first.content
    job_id = first.json_body["job"]["id"]
    for path in (
        f"/api/v1/rotation/keys/{chain.l2_id}/rotate/",
        f"/api/v1/keys/{chain.l2_id}/rotate/",
    ):
        second = chain.admin.post(path, {})
        assert second.status_code == 409, second.content
        assert second.json_body["code"] == "rotation_in_progress"
        assert second.json_body["job_id"] == job_id and job_id in second.json_body["detail"]
    # A dry run changes nothing, so it may run beside the rotation.
    dry = chain.admin.post(f"/api/v1/rotation/keys/{chain.l2_id}/rotate/", {"dry_run": True})
    assert dry.status_code == 202 and dry.json_body["job"]["dry_run"] is True


def test_cancel_stops_the_job_and_resume_continues_from_its_cursor(
    make_chain: Any, settings: Any
) -> None:
    settings.KCM_REWRAP_BATCH_SIZE = 3
    chain = make_chain(service_keys=9)
    with chain.inside():
        job = _running(services.rotation_start(key_id=chain.l2_id).job)  # type: ignore[arg-type]
        runner.rewrap_job_run_batch(job_id=job.pk)
    cancelled = chain.admin.post(f"/api/v1/rotation/jobs/{job.pk}/cancel/", {})
    assert cancelled.status_code == 200 and cancelled.json_body["state"] == "cancelled"
    with chain.inside():
        assert runner.rewrap_job_run(job_id=job.pk) == JobState.CANCELLED
        assert rotationkit.chain_census()["l2_versions"] == {1: "ENABLED", 2: "ENABLED"}
    again = chain.admin.post(f"/api/v1/rotation/jobs/{job.pk}/cancel/", {})
    assert again.status_code == 409 and again.json_body["code"] == "invalid_job_state"
    resumed = chain.admin.post(f"/api/v1/rotation/jobs/{job.pk}/resume/", {})
    assert resumed.status_code == 200 and resumed.json_body["state"] == "queued"
    assert resumed.json_body["done"] == 3
    with chain.inside():
        assert runner.rewrap_job_run(job_id=job.pk) == JobState.SUCCEEDED
        job.refresh_from_db()
        assert (job.done, job.failed) == (9, 0)


def test_a_child_that_does_not_unwrap_fails_the_job_and_keeps_its_parent_version(
    make_chain: Any,
) -> None:
    chain = make_chain(service_keys=5)
    with chain.inside():
        broken = ServiceKeyVersion.objects.get(key__name=chain.names[2])
        tampered = bytearray(bytes(broken.wrapped))
        tampered[-1] ^= 1
        ServiceKeyVersion.objects.filter(pk=broken.pk).update(wrapped=bytes(tampered))
        job = services.rotation_start(key_id=chain.l2_id).job
        assert job is not None and runner.rewrap_job_run(job_id=job.pk) == JobState.FAILED
        job.refresh_from_db()
        assert (job.done, job.failed) == (4, 1)
        assert job.error["code"] == "children_failed"
        assert job.error["children"] == [
            {"child": broken.pk, "key": str(broken.key_id), "version": 1, "parent": 1,
             "code": "ciphertext_invalid"}
        ]  # fmt: skip
        census = rotationkit.chain_census()
        assert census["l3_versions_by_parent"] == {"1": 1, "2": 4}
        assert census["l2_versions"] == {1: "ENABLED", 2: "ENABLED"}  # still referenced


def test_a_dry_run_reports_what_would_move_and_changes_nothing(make_chain: Any) -> None:
    chain = make_chain(service_keys=4)
    reply = chain.admin.post(f"/api/v1/rotation/keys/{chain.l2_id}/rotate/", {"dry_run": True})
    assert reply.status_code == 202, reply.content
    assert reply.json_body["key"]["primary_version"] == 1
    job_id = reply.json_body["job"]["id"]
    with chain.inside():
        before = _wrapped()
        assert runner.rewrap_job_run(job_id=job_id) == JobState.SUCCEEDED
        assert _wrapped() == before
        assert rotationkit.chain_census()["l2_versions"] == {1: "ENABLED"}
    report = chain.admin.get(f"/api/v1/rotation/jobs/{job_id}/").json_body["report"]
    assert report == {
        "children_by_parent_version": {"1": 4},
        "would_rotate": {"from": 1, "to": 2},
        "would_rewrap": 4,
        "would_fail": 0,
        "would_retire": [1],
    }


def test_a_disabled_root_fails_the_job_which_finishes_once_it_is_enabled(
    make_chain: Any, settings: Any
) -> None:
    settings.KCM_REWRAP_BATCH_SIZE = 2
    chain = make_chain(service_keys=4)
    with chain.inside():
        job = _running(services.rotation_start(key_id=chain.l2_id).job)  # type: ignore[arg-type]
        runner.rewrap_job_run_batch(job_id=job.pk)
        keychain_services.key_disable(key_id=chain.l1_id)
        assert runner.rewrap_job_run(job_id=job.pk) == JobState.FAILED
        job.refresh_from_db()
        assert job.error["code"] == "key_disabled" and job.done == 2
        keychain_services.key_enable(key_id=chain.l1_id)
        services.rewrap_job_resume(job_id=job.pk)
        assert runner.rewrap_job_run(job_id=job.pk) == JobState.SUCCEEDED
        job.refresh_from_db()
        assert (job.done, job.failed) == (4, 0)


def test_a_service_key_rotates_at_once_without_a_job(make_chain: Any) -> None:
    chain = make_chain()
    l3_id = chain.user.get("/api/v1/service-keys/payments/").json_body["id"]
    reply = chain.admin.post(f"/api/v1/rotation/keys/{l3_id}/rotate/", {})
    assert reply.status_code == 200, reply.content
    assert reply.json_body == {
        "key": {"id": l3_id, "level": "L3", "primary_version": 2},
        "job": None,
    }
    dry = chain.admin.post(f"/api/v1/rotation/keys/{l3_id}/rotate/", {"dry_run": True})
    assert dry.status_code == 400 and dry.json_body["code"] == "rotation_not_supported"


def test_data_keys_keep_working_while_a_job_is_half_done(make_chain: Any, settings: Any) -> None:
    settings.KCM_REWRAP_BATCH_SIZE = 3
    chain = make_chain(service_keys=6)
    ciphertexts = {}
    for name in chain.names:
        made = chain.user.post(f"/api/v1/service-keys/{name}/generate-data-key/", {})
        ciphertexts[name] = made.json_body["ciphertext"]
    with chain.inside():
        job = _running(services.rotation_start(key_id=chain.l2_id).job)  # type: ignore[arg-type]
        runner.rewrap_job_run_batch(job_id=job.pk)
        assert rotationkit.chain_census()["l3_versions_by_parent"] == {"1": 3, "2": 3}
    for name, ciphertext in ciphertexts.items():
        opened = chain.user.post(
            f"/api/v1/service-keys/{name}/decrypt-data-key/", {"ciphertext": ciphertext}
        )
        assert opened.status_code == 200, (name, opened.content)
        made = chain.user.post(f"/api/v1/service-keys/{name}/generate-data-key/", {})
        assert made.status_code == 200, (name, made.content)


def test_a_destroyed_service_key_does_not_hold_back_retirement(make_chain: Any) -> None:
    chain = make_chain(service_keys=3)
    with chain.inside():
        gone = ServiceKey.objects.get(name=chain.names[1])
        keychain_services.key_schedule_deletion(key_id=gone.pk, pending_days=7)
        keychain_services.key_destroy(key_id=gone.pk, now=timezone.now() + timedelta(days=8))
        job = services.rotation_start(key_id=chain.l2_id).job
        assert job is not None and job.total == 2
        assert runner.rewrap_job_run(job_id=job.pk) == JobState.SUCCEEDED
        assert rotationkit.chain_census()["l2_versions"] == {1: "RETIRED", 2: "ENABLED"}
        assert bytes(ServiceKeyVersion.objects.get(key=gone).wrapped) == b""


def test_resuming_a_job_whose_key_was_rotated_again_is_refused(make_chain: Any) -> None:
    chain = make_chain()
    first = chain.admin.post(f"/api/v1/rotation/keys/{chain.l2_id}/rotate/", {}).json_body["job"]
    chain.admin.post(f"/api/v1/rotation/jobs/{first['id']}/cancel/", {})
    second = chain.admin.post(f"/api/v1/rotation/keys/{chain.l2_id}/rotate/", {})
    assert second.status_code == 202 and second.json_body["job"]["target_version"] == 3
    refused = chain.admin.post(f"/api/v1/rotation/jobs/{first['id']}/resume/", {})
    assert refused.status_code == 409 and refused.json_body["code"] == "rotation_job_superseded"


def test_a_job_without_a_runner_is_queued_again(
    make_chain: Any, django_capture_on_commit_callbacks: Any
) -> None:
    chain = make_chain()
    with chain.inside():
        job = _running(services.rotation_start(key_id=chain.l2_id).job)  # type: ignore[arg-type]
        RewrapJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
        with django_capture_on_commit_callbacks() as queued:
            assert services.rewrap_job_requeue(job_id=job.pk) is True
        assert len(queued) == 1
        job.refresh_from_db()
        assert timezone.now() - job.heartbeat_at < timedelta(minutes=1)
        services.rewrap_job_cancel(job_id=job.pk)
        assert services.rewrap_job_requeue(job_id=job.pk) is False


def test_a_root_replaced_outside_a_rotation_is_rewrapped_on_request(make_chain: Any) -> None:
    """As after a BYOK import or a HYOK link: the L1 gets a new primary version by other means
    (here a new HSM object), and a rewrap moves the tenant key under it."""
    chain = make_chain(service_keys=3)
    with chain.inside():
        before = rotationkit.data_keys(chain.names)
        old = CustomerKeyVersion.objects.get()
        replacement = CustomerKeyVersion.objects.create(
            key_id=chain.l1_id, version=2, handle=platform_keystore().create_root_key(label="new")
        )
        old.key.primary_version = 2
        old.key.save(update_fields=["primary_version"])
    started = chain.admin.post(f"/api/v1/rotation/keys/{chain.l1_id}/rewrap/", {})
    assert started.status_code == 202, started.content
    job = started.json_body
    assert (job["from_version"], job["target_version"], job["total"]) == (1, 2, 1)
    with chain.inside():
        assert runner.rewrap_job_run(job_id=job["id"]) == JobState.SUCCEEDED
        assert TenantKeyVersion.objects.get().parent_id == replacement.pk
        assert CustomerKeyVersion.objects.get(pk=old.pk).state == VersionState.RETIRED
        assert platform_keystore().exists(old.handle)  # retired, kept for restores
        assert rotationkit.check_data_keys(before)["ok"] == 3
    again = chain.admin.post(f"/api/v1/rotation/keys/{chain.l1_id}/rewrap/", {})
    assert again.status_code == 202 and again.json_body["total"] == 0
