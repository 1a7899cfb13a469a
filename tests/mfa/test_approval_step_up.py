"""Step-up on a real approval request: two approvers with authenticator apps approve a disable;
without a fresh factor nothing is counted, with one the request executes once."""

from __future__ import annotations

from django.test import Client

from tests.approvals.conftest import Setup, setup  # noqa: F401 (the approvals fixture)
from tests.conftest import World
from tests.helpers import assert_problem
from tests.mfa.kit import enrol_totp, next_code


def test_approvers_with_a_factor_approve_only_after_a_fresh_one(setup: Setup, world: World) -> None:  # noqa: F811
    assert setup.policy(actions=["key.disable"]).status_code == 200
    request = setup.requester.post(f"/api/v1/keys/{setup.l1}/disable/", {}).json_body
    first, second = setup.approvers[:2]
    first_seed, second_seed = enrol_totp(first.user), enrol_totp(second.user)

    # API: the token's person has a factor, so a current code is required.
    path = f"/api/v1/approvals/{request['id']}/approve/"
    assert_problem(first.api.post(path, {}), 403, "mfa_step_up_required")
    assert_problem(first.api.post(path, {}, x_kcm_mfa_code="123456x"), 403, "mfa_invalid_code")
    state = setup.auditor.get(f"/api/v1/approvals/{request['id']}/").json_body
    assert state["state"] == "PENDING" and not state.get("approvals")
    approved = first.api.post(path, {}, x_kcm_mfa_code=next_code(first_seed))
    assert approved.status_code == 200 and approved.json_body["state"] == "PENDING"

    # Console: sent to the step-up page and back; the approval counts only afterwards.
    console = Client(HTTP_HOST="acme.localhost")
    console.force_login(second.user)
    decide = f"/approvals/{request['id']}/approve/"
    diverted = console.post(decide)
    assert diverted["Location"] == "/mfa/step-up/?next=%2Fapprovals%2F"
    state = setup.auditor.get(f"/api/v1/approvals/{request['id']}/").json_body
    assert state["state"] == "PENDING"
    back = console.post("/mfa/step-up/", {"code": next_code(second_seed), "next": "/approvals/"})
    assert back["Location"] == "/approvals/"
    done = console.post(decide, follow=True)
    assert b"Request executed." in done.content
    state = setup.auditor.get(f"/api/v1/approvals/{request['id']}/").json_body
    assert state["state"] == "EXECUTED"
