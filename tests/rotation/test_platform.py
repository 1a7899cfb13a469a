"""Platform-wide rotation: one level in every active tenant, fanned out crash-safely, followed
as one run; only platform operators on the base domain may start or watch it."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django_tenants.utils import tenant_context

from apps.core.roles import Role
from apps.rotation import runner, sweep
from apps.rotation.models import JobReason, RewrapJob
from apps.rotation.platform.models import PlatformRotation, RunState
from tests.e2e import rotationkit
from tests.helpers import assert_problem


def _public() -> None:
    connection.set_schema_to_public()  # type: ignore[attr-defined]


def test_an_operator_rotates_every_tenants_l2_and_follows_one_run(
    make_chain: Any, api: Any
) -> None:
    acme, globex = make_chain("acme", service_keys=4), make_chain("globex", service_keys=2)
    operator = api("platform", Role.PLATFORM_OPERATOR)
    started = operator.post("/api/v1/platform/rotations/", {"level": "L2"})
    assert started.status_code == 202, started.content
    run_id = started.json_body["id"]
    assert started.json_body["state"] == "fanning_out"
    _public()
    assert sweep.platform_rotation_run(run_id=run_id) == RunState.FANNED_OUT
    jobs = {}
    for chain in (acme, globex):
        with tenant_context(chain.tenant):
            job = RewrapJob.objects.get()
            assert (job.reason, str(job.platform_run), str(job.key_id)) == (
                JobReason.PLATFORM,
                run_id,
                chain.l2_id,
            )
            jobs[chain.tenant.slug] = job
    halfway = operator.get(f"/api/v1/platform/rotations/{run_id}/").json_body
    assert (halfway["state"], halfway["tenants"], halfway["jobs"]) == ("running", 2, 2)
    assert (halfway["total"], halfway["done"], halfway["jobs_by_state"]) == (6, 0, {"queued": 2})
    for chain in (acme, globex):
        with tenant_context(chain.tenant):
            assert runner.rewrap_job_run(job_id=jobs[chain.tenant.slug].pk) == "succeeded"
            assert rotationkit.chain_census()["l2_versions"] == {1: "RETIRED", 2: "ENABLED"}
    done = operator.get(f"/api/v1/platform/rotations/{run_id}/").json_body
    assert (done["state"], done["done"], done["progress"]) == ("succeeded", 6, 1.0)
    assert [r["id"] for r in operator.get("/api/v1/platform/rotations/").json_body["results"]] == [
        run_id
    ]


def test_a_fan_out_resumed_after_a_crash_rotates_no_key_twice(make_chain: Any) -> None:
    acme, globex = make_chain("acme"), make_chain("globex")
    _public()
    run = sweep.platform_rotation_start(level="L1")
    assert sweep.platform_rotation_run(run_id=run.pk) == RunState.FANNED_OUT
    # As if the worker died after the last tenant's commit but before the run was marked done,
    # and as if an earlier attempt had been rolled back in the middle: go over it all again.
    PlatformRotation.objects.filter(pk=run.pk).update(state=RunState.FANNING_OUT, cursor=0)
    assert sweep.platform_rotation_run(run_id=run.pk) == RunState.FANNED_OUT
    for chain in (acme, globex):
        with tenant_context(chain.tenant):
            assert RewrapJob.objects.count() == 1
            assert rotationkit.chain_census()["l1_versions"] == {1: "ENABLED", 2: "ENABLED"}


def test_a_tenant_whose_key_is_already_rotating_is_reported_as_skipped(make_chain: Any) -> None:
    acme = make_chain("acme")
    acme.admin.post(f"/api/v1/rotation/keys/{acme.l2_id}/rotate/", {})
    _public()
    run = sweep.platform_rotation_start(level="L2")
    sweep.platform_rotation_run(run_id=run.pk)
    run.refresh_from_db()
    assert (run.jobs, run.skipped) == (
        0,
        [{"tenant": "acme", "key": acme.l2_id, "code": "rotation_in_progress"}],
    )


def test_only_platform_operators_on_the_base_domain_start_platform_rotations(
    world: Any, api: Any
) -> None:
    for role in (Role.KEY_ADMIN, Role.TENANT_ADMIN):
        refused = api("acme", role, on="platform").post(
            "/api/v1/platform/rotations/", {"level": "L2"}
        )
        assert_problem(refused, 403, "wrong_tenant")
    operator = api("platform", Role.PLATFORM_OPERATOR)
    assert_problem(
        operator.post("/api/v1/platform/rotations/", {"level": "L3"}), 400, "validation_error"
    )
    assert_problem(
        operator.get("/api/v1/platform/rotations/00000000-0000-0000-0000-000000000004/"),
        404,
        "platform_rotation_not_found",
    )
    # The tenant host has no platform endpoints at all.
    assert api("acme", Role.KEY_ADMIN).get("/api/v1/platform/rotations/").status_code == 404
