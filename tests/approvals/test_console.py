"""The console's Approvals page and the navigation's pending count."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.core.roles import Role
from tests.approvals.conftest import Setup
from tests.conftest import World


def _client(user: Any) -> Client:
    client = Client(HTTP_HOST="acme.localhost")
    client.force_login(user)
    return client


def _approval_queries(client: Client, path: str) -> tuple[Any, int]:
    with CaptureQueriesContext(connection) as queries:
        page = client.get(path)
    connection.set_schema_to_public()  # type: ignore[attr-defined]
    return page, sum("approvals_approvalrequest" in q["sql"] for q in queries.captured_queries)


def test_the_pending_count_costs_one_query_and_only_approvers_pay_it(
    setup: Setup, world: World
) -> None:
    assert setup.policy(actions=["key.disable"]).status_code == 200
    assert setup.requester.post(f"/api/v1/keys/{setup.l1}/disable/", {}).status_code == 202
    approver = _client(setup.approvers[0].user)
    page, count = _approval_queries(approver, "/keys/")
    assert page.status_code == 200 and count == 1
    assert b'data-testid="approvals-pending-count">1<' in page.content
    # The requester is not asked to approve their own request; a key user is not an approver.
    page, _ = _approval_queries(_client(world.users[("acme", Role.KEY_ADMIN)]), "/keys/")
    assert b"approvals-pending-count" not in page.content
    page, count = _approval_queries(_client(world.users[("acme", Role.KEY_USER)]), "/")
    assert page.status_code == 200 and count == 0


def test_approving_and_denying_from_the_console(setup: Setup, world: World) -> None:
    assert setup.policy(actions=["key.disable", "key.rotate"]).status_code == 200
    disable = setup.requester.post(f"/api/v1/keys/{setup.l1}/disable/", {}).json_body
    rotate = setup.requester.post(f"/api/v1/keys/{setup.l1}/rotate/", {}).json_body
    first, second = (_client(a.user) for a in setup.approvers[:2])
    page = first.get("/approvals/")
    assert page.content.count(b">Approve</button>") == 2
    first.post(f"/approvals/{disable['id']}/approve/")
    done = second.post(f"/approvals/{disable['id']}/approve/", follow=True)
    assert b"Request executed." in done.content
    denied = second.post(f"/approvals/{rotate['id']}/deny/", {"reason": "too soon"}, follow=True)
    assert b"Request denied." in denied.content
    states = {
        r["id"]: r["state"] for r in setup.auditor.get("/api/v1/approvals/").json_body["results"]
    }
    assert states == {disable["id"]: "EXECUTED", rotate["id"]: "DENIED"}
    # The requester sees Withdraw, not Approve, on their own request.
    again = setup.requester.post(f"/api/v1/keys/{setup.l1}/rotate/", {}).json_body
    own = _client(world.users[("acme", Role.KEY_ADMIN)]).get("/approvals/")
    assert b">Withdraw</button>" in own.content and b">Approve</button>" not in own.content
    assert again["state"] == "PENDING"


def test_a_tenant_admin_sets_the_policy_from_the_console(setup: Setup, world: World) -> None:
    admin = _client(world.users[("acme", Role.TENANT_ADMIN)])
    assert b"approval-policy-form" in admin.get("/approvals/").content
    form = {"actions": ["key.disable"], "approver_role": "key_admin", "expiry_days": 3}
    refused = admin.post("/approvals/policy/", {**form, "required": 5}, follow=True)
    assert b"this tenant has 4" in refused.content
    saved = admin.post("/approvals/policy/", {**form, "required": 2}, follow=True)
    assert b"Approval policy saved." in saved.content
    got = setup.auditor.get("/api/v1/approvals/policy/").json_body
    assert (got["actions"], got["required"], got["expiry_days"]) == (["key.disable"], 2, 3)
    # A key admin sees the requests, not the policy form.
    page = _client(setup.approvers[0].user).get("/approvals/")
    assert page.status_code == 200 and b"approval-policy-form" not in page.content


def test_the_requester_runs_a_failed_request_again_from_the_console(
    setup: Setup, world: World
) -> None:
    assert setup.policy(actions=["key.disable"]).status_code == 200
    key = f"/api/v1/keys/{setup.l1}/"
    asked = setup.requester.post(key + "disable/", {}).json_body
    setup.requester.post(key + "schedule-deletion/", {"pending_days": 7})
    for approver in setup.approvers[:2]:
        approver.api.post(f"/api/v1/approvals/{asked['id']}/approve/", {})
    setup.requester.post(key + "cancel-deletion/", {})
    setup.requester.post(key + "enable/", {})
    requester = _client(world.users[("acme", Role.KEY_ADMIN)])
    assert b">Run again</button>" in requester.get("/approvals/").content
    # Only the requester is offered the button.
    assert b">Run again</button>" not in _client(setup.approvers[0].user).get("/approvals/").content
    done = requester.post(f"/approvals/{asked['id']}/execute/", follow=True)
    assert b"Request executed." in done.content
    got = setup.auditor.get(f"/api/v1/approvals/{asked['id']}/").json_body
    assert (got["state"], got["result"]["state"]) == ("EXECUTED", "DISABLED")
    assert b">Run again</button>" not in requester.get("/approvals/").content
