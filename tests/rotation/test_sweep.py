"""The beat sweep: which keys are due (period, usage, the GCM safety limit), across tenants, and
which stalled jobs it queues again."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import connection
from django.utils import timezone

from apps.keychain.models import ServiceKeyVersion, TenantKeyVersion
from apps.rotation import policies, runner, selectors, services, sweep
from apps.rotation.models import JobReason, JobState, RewrapJob
from apps.rotation.platform.models import TenantRotationCheck


def _public() -> None:
    connection.set_schema_to_public()  # type: ignore[attr-defined]


def _age_primary_l2(chain: Any, days: int) -> None:
    with chain.inside():
        TenantKeyVersion.objects.update(created_at=timezone.now() - timedelta(days=days))


def test_nothing_is_rotated_when_nothing_is_due(make_chain: Any) -> None:
    make_chain("acme")
    make_chain("globex")
    _public()
    report = sweep.rotation_sweep()
    assert (report.tenants, report.checked, report.due, report.rotated) == (2, 2, 0, [])
    # Looked at, nothing due and no policy: not looked at again before the check interval.
    assert sweep.rotation_sweep().checked == 0


def test_a_key_past_its_period_is_rotated_in_its_own_tenant_only(make_chain: Any) -> None:
    acme, globex = make_chain("acme"), make_chain("globex")
    for chain in (acme, globex):
        with chain.inside():
            policies.rotation_default_set(level="L2", period_days=30)
    _age_primary_l2(acme, 31)
    _age_primary_l2(globex, 29)
    _public()
    report = sweep.rotation_sweep()
    assert report.rotated == [f"t_acme:{acme.l2_id}"]
    with acme.inside():
        job = RewrapJob.objects.get()
        assert (job.reason, job.level, job.target_version) == (JobReason.POLICY, "L2", 2)
    with globex.inside():
        assert not RewrapJob.objects.exists()
    # Rotated, it is not due again (nor while its job runs).
    _public()
    assert sweep.rotation_sweep().rotated == []


def test_a_key_policy_overrides_the_tenant_default(make_chain: Any) -> None:
    chain = make_chain()
    with chain.inside():
        policies.rotation_default_set(level="L2", period_days=10)
        policies.rotation_policy_set(key_id=chain.l2_id, period_days=365)
    _age_primary_l2(chain, 11)
    _public()
    assert sweep.rotation_sweep().due == 0


def test_a_service_key_is_due_at_its_usage_count_and_always_before_the_gcm_limit(
    make_chain: Any, settings: Any
) -> None:
    settings.KCM_GCM_USAGE_LIMIT = 10_000
    chain = make_chain(service_keys=3)
    with chain.inside():
        policies.rotation_policy_set(key_id=_l3_id(chain.names[0]), period_days=None, max_usage=50)
        ServiceKeyVersion.objects.filter(key__name=chain.names[0]).update(usage_reserved=50)
        ServiceKeyVersion.objects.filter(key__name=chain.names[1]).update(usage_reserved=9_000)
        ServiceKeyVersion.objects.filter(key__name=chain.names[2]).update(usage_reserved=8_999)
    _public()
    report = sweep.rotation_sweep()
    assert report.due == 2
    with chain.inside():
        rotated = dict(
            ServiceKeyVersion.objects.filter(version=2).values_list("key__name", "parent__version")
        )
        assert set(rotated) == {chain.names[0], chain.names[1]}
        assert not RewrapJob.objects.exists()  # service keys rotate without a job


def _l3_id(name: str) -> str:
    return str(ServiceKeyVersion.objects.get(key__name=name).key_id)


def test_disabled_keys_and_byok_roots_are_left_alone(make_chain: Any) -> None:
    from apps.keychain import services as keychain_services
    from apps.keychain.models import CustomerKey

    chain = make_chain()
    with chain.inside():
        policies.rotation_default_set(level="L1", period_days=1)
        policies.rotation_default_set(level="L2", period_days=1)
        CustomerKey.objects.update(origin="BYOK")
        keychain_services.key_disable(key_id=chain.l2_id)
    _age_primary_l2(chain, 5)
    with chain.inside():
        from apps.keychain.models import CustomerKeyVersion

        CustomerKeyVersion.objects.update(created_at=timezone.now() - timedelta(days=5))
    _public()
    assert sweep.rotation_sweep().due == 0


def test_stalled_jobs_are_queued_again_but_live_or_fresh_ones_are_not(
    make_chain: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.KCM_REWRAP_STALL_SECONDS = 60
    acme, globex = make_chain("acme"), make_chain("globex")
    jobs = {}
    for chain in (acme, globex):
        with chain.inside():
            job = services.rotation_start(key_id=chain.l2_id).job
            assert job is not None
            RewrapJob.objects.filter(pk=job.pk).update(state=JobState.RUNNING)
            jobs[chain.tenant.slug] = job
    with acme.inside():
        RewrapJob.objects.update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    _public()
    with django_capture_on_commit_callbacks() as queued:
        report = sweep.rotation_sweep()
    assert report.requeued_jobs == 1 and len(queued) == 1
    # On worker start-up every job without a runner is queued, fresh or not.
    with django_capture_on_commit_callbacks() as queued:
        assert sweep.rotation_resume() == 2
    with acme.inside():
        assert runner.rewrap_job_run(job_id=jobs["acme"].pk) == JobState.SUCCEEDED
    _public()
    assert [row[1] for row in selectors.active_jobs(schemas=["t_acme", "t_globex"])] == [
        jobs["globex"].pk
    ]
    # The sweep stops watching a tenant once it has no active job.
    sweep.rotation_sweep()
    watched = TenantRotationCheck.objects.filter(jobs_active_since__isnull=False)
    assert [check.tenant_id for check in watched] == [globex.tenant.pk]


def test_a_tenant_is_looked_at_again_when_its_next_key_falls_due(
    make_chain: Any, settings: Any
) -> None:
    settings.KCM_ROTATION_CHECK_SECONDS = 3600
    chain = make_chain()
    with chain.inside():
        policies.rotation_default_set(level="L2", period_days=30)
        now = timezone.now()
        # Due in ten minutes: sooner than the hourly look.
        TenantKeyVersion.objects.update(created_at=now - timedelta(days=30, minutes=-10))
    _public()
    assert sweep.rotation_sweep(now=now).checked == 2  # acme and globex, first seen
    acme = TenantRotationCheck.objects.get(tenant=chain.tenant)
    assert acme.next_check_at == now + timedelta(minutes=10)
    globex = TenantRotationCheck.objects.exclude(tenant=chain.tenant).get()
    assert now + timedelta(minutes=47) < globex.next_check_at <= now + timedelta(hours=1)
    assert sweep.rotation_sweep(now=now + timedelta(minutes=5)).checked == 0
    report = sweep.rotation_sweep(now=now + timedelta(minutes=10))
    assert (report.checked, report.rotated) == (1, [f"t_acme:{chain.l2_id}"])


def test_a_policy_change_makes_the_next_sweep_look(make_chain: Any) -> None:
    chain = make_chain()
    _public()
    assert sweep.rotation_sweep().checked == 2
    assert sweep.rotation_sweep().checked == 0
    with chain.inside():
        policies.rotation_policy_set(key_id=chain.l2_id, period_days=1)
    _age_primary_l2(chain, 2)
    _public()
    report = sweep.rotation_sweep()
    assert (report.checked, report.rotated) == (1, [f"t_acme:{chain.l2_id}"])
