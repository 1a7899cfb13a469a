"""Linking another external key to a HYOK key, and deleting a key manager, can wait for
approval like the other L1 actions (a real KMIP server, tests/keychain/kmip_server.py)."""

from __future__ import annotations

from typing import Any

from apps.core.roles import Role
from tests.approvals.conftest import add_key_admin
from tests.conftest import World
from tests.keychain.kmip_server import KmipAdmin
from tests.keychain.kmipkit import Hyok


def test_linking_a_hyok_version_waits_for_approval(
    api: Any, world: World, hyok_api: Hyok, customer: KmipAdmin
) -> None:
    l1 = hyok_api.chain(customer.create_aes_key())
    second = customer.create_aes_key()
    approvers = [add_key_admin(world, "acme", f"link-approver-{n}") for n in range(2)]
    policy = {"actions": ["key.link_version", "key_manager.delete"], "required": 2}
    tenant_admin = api("acme", Role.TENANT_ADMIN)
    assert tenant_admin.call("PUT", "/api/v1/approvals/policy/", policy).status_code == 200

    asked = hyok_api.admin.post(f"/api/v1/keys/{l1['id']}/link/", {"external_key_id": second})
    assert asked.status_code == 202, asked.content
    assert asked.json_body["params"] == {"external_key_id": second}
    assert len(hyok_api.state(l1["id"])["versions"]) == 1
    for approver in approvers:
        done = approver.api.post(f"/api/v1/approvals/{asked.json_body['id']}/approve/", {})
    assert done.json_body["state"] == "EXECUTED", done.json_body
    versions = hyok_api.state(l1["id"])["versions"]
    assert [(v["version"], v["external_key_id"]) for v in versions][1] == (2, second)


def test_deleting_a_key_manager_waits_for_approval(api: Any, world: World, hyok_api: Hyok) -> None:
    manager = hyok_api.manager()
    approvers = [add_key_admin(world, "acme", f"km-approver-{n}") for n in range(2)]
    policy = {"actions": ["key_manager.delete"], "required": 2}
    assert (
        api("acme", Role.TENANT_ADMIN).call("PUT", "/api/v1/approvals/policy/", policy).status_code
        == 200
    )
    path = f"/api/v1/key-managers/{manager['id']}/"
    asked = hyok_api.admin.call("DELETE", path)
    assert asked.status_code == 202, asked.content
    assert hyok_api.admin.get(path).status_code == 200
    for approver in approvers:
        done = approver.api.post(f"/api/v1/approvals/{asked.json_body['id']}/approve/", {})
    assert done.json_body["state"] == "EXECUTED", done.json_body
    assert hyok_api.admin.get(path).status_code == 404
