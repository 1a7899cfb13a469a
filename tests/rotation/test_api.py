"""The rotation API: job views, policies, refusals (wrong tenant, wrong role, bad input)."""

from __future__ import annotations

from typing import Any

from apps.core.roles import Role
from tests.helpers import assert_problem


def test_a_job_is_shown_with_its_progress(make_chain: Any, api: Any) -> None:
    chain = make_chain(service_keys=3)
    started = chain.admin.post(f"/api/v1/rotation/keys/{chain.l2_id}/rotate/", {})
    assert started.status_code == 202
    job = started.json_body["job"]
    assert job["key_name"] == "tenant key of root" and job["key_id"] == chain.l2_id
    assert (job["level"], job["from_version"], job["target_version"]) == ("L2", 1, 2)
    assert (job["state"], job["total"], job["done"], job["progress"]) == ("queued", 3, 0, 0.0)
    assert job["requested_by"].startswith("token:") and job["reason"] == "manual"
    for role in (Role.KEY_ADMIN, Role.TENANT_ADMIN, Role.AUDITOR):
        detail = api("acme", role).get(f"/api/v1/rotation/jobs/{job['id']}/")
        assert detail.status_code == 200 and detail.json_body["id"] == job["id"]
    listed = chain.admin.get(f"/api/v1/rotation/jobs/?key_id={chain.l2_id}&state=queued")
    assert [j["id"] for j in listed.json_body["results"]] == [job["id"]]
    assert chain.admin.get("/api/v1/rotation/jobs/?state=running").json_body["results"] == []


def test_another_tenants_job_and_keys_are_invisible(make_chain: Any, api: Any) -> None:
    chain = make_chain()
    job = chain.admin.post(f"/api/v1/rotation/keys/{chain.l2_id}/rotate/", {}).json_body["job"]
    globex = api("globex", Role.KEY_ADMIN)
    assert_problem(globex.get(f"/api/v1/rotation/jobs/{job['id']}/"), 404, "rotation_job_not_found")
    assert_problem(
        globex.post(f"/api/v1/rotation/jobs/{job['id']}/cancel/", {}), 404, "rotation_job_not_found"
    )
    assert_problem(
        globex.post(f"/api/v1/rotation/keys/{chain.l2_id}/rotate/", {}), 404, "key_not_found"
    )
    assert_problem(globex.get(f"/api/v1/rotation/keys/{chain.l2_id}/policy/"), 404, "key_not_found")
    # acme's token on globex's host is refused before anything is looked up.
    foreign = api("acme", Role.KEY_ADMIN, on="globex")
    assert_problem(foreign.get(f"/api/v1/rotation/jobs/{job['id']}/"), 403, "wrong_tenant")
    assert globex.get("/api/v1/rotation/jobs/").json_body["results"] == []


def test_only_key_admins_rotate_cancel_and_set_policies(make_chain: Any, api: Any) -> None:
    chain = make_chain()
    for role in (Role.TENANT_ADMIN, Role.AUDITOR, Role.KEY_USER):
        other = api("acme", role)
        assert_problem(
            other.post(f"/api/v1/rotation/keys/{chain.l2_id}/rotate/", {}), 403, "role_not_allowed"
        )
        assert_problem(
            other.call("PUT", "/api/v1/rotation/defaults/", {"level": "L2", "period_days": 1}),
            403,
            "role_not_allowed",
        )
    assert_problem(
        api("acme", Role.KEY_USER).get("/api/v1/rotation/jobs/"), 403, "role_not_allowed"
    )


def test_bad_input_is_refused_with_a_clear_code(make_chain: Any) -> None:
    chain = make_chain()
    rotate = f"/api/v1/rotation/keys/{chain.l2_id}/rotate/"
    assert_problem(chain.admin.post(rotate, {"dry_run": "yes"}), 400, "validation_error")
    assert_problem(chain.admin.post(rotate, {"force": True}), 400, "validation_error")
    assert_problem(chain.admin.get("/api/v1/rotation/jobs/?state=done"), 400, "invalid_state")
    assert_problem(chain.admin.get("/api/v1/rotation/jobs/?key_id=x"), 400, "invalid_key_id")
    policy = f"/api/v1/rotation/keys/{chain.l1_id}/policy/"
    assert_problem(chain.admin.call("PUT", policy, {"max_usage": 10}), 400, "invalid_max_usage")
    assert_problem(chain.admin.call("PUT", policy, {"period_days": 0}), 400, "invalid_period")
    assert_problem(
        chain.admin.call("PUT", "/api/v1/rotation/defaults/", {"level": "L4"}),
        400,
        "validation_error",
    )
    unknown = "/api/v1/rotation/jobs/00000000-0000-0000-0000-000000000009/"
    assert_problem(chain.admin.get(unknown), 404, "rotation_job_not_found")


def test_policies_are_set_per_key_over_tenant_defaults(make_chain: Any) -> None:
    chain = make_chain()
    l3_id = chain.user.get("/api/v1/service-keys/payments/").json_body["id"]
    defaults = chain.admin.call(
        "PUT", "/api/v1/rotation/defaults/", {"level": "L3", "period_days": 90, "max_usage": 1000}
    )
    assert defaults.status_code == 200
    assert defaults.json_body == {
        "L1": None,
        "L2": None,
        "L3": {"period_days": 90, "max_usage": 1000},
    }
    policy = f"/api/v1/rotation/keys/{l3_id}/policy/"
    inherited = chain.admin.get(policy).json_body
    assert inherited["own"] is None and inherited["effective"]["period_days"] == 90
    own = chain.admin.call("PUT", policy, {"period_days": 7}).json_body
    assert own["own"] == {"period_days": 7, "max_usage": None}
    assert own["effective"]["period_days"] == 7 and own["effective"]["max_usage"] == 1000
    assert own["next_due_at"] is not None and own["usage_reserved"] == 0
    assert chain.admin.call("DELETE", policy).status_code == 204
    assert chain.admin.get(policy).json_body["own"] is None
    cleared = chain.admin.call("PUT", "/api/v1/rotation/defaults/", {"level": "L3"})
    assert cleared.json_body["L3"] is None
