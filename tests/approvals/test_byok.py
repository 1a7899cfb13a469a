"""Deleting a BYOK key's imported material can wait for approval like the other L1 actions."""

from __future__ import annotations

import os
from typing import Any

from apps.core.roles import Role
from tests.approvals.conftest import add_key_admin
from tests.conftest import World
from tests.keychain.byokkit import Byok


def test_deleting_imported_material_waits_for_approval(api: Any, world: World) -> None:
    byok = Byok(api)
    l1 = byok.create()
    assert byok.import_material(l1["id"], os.urandom(32)).status_code == 200
    approvers = [add_key_admin(world, "acme", f"approver-{n}") for n in range(2)]
    policy = {"actions": ["key.import_delete"], "required": 2}
    tenant_admin = api("acme", Role.TENANT_ADMIN)
    assert tenant_admin.call("PUT", "/api/v1/approvals/policy/", policy).status_code == 200

    asked = byok.admin.post(f"/api/v1/keys/{l1['id']}/delete-imported-material/", {})
    assert asked.status_code == 202 and asked.json_body["action"] == "key.import_delete"
    assert byok.material(l1["id"])["state"] == "ENABLED"
    for approver in approvers:
        done = approver.api.post(f"/api/v1/approvals/{asked.json_body['id']}/approve/", {})
    assert done.json_body["state"] == "EXECUTED", done.json_body
    assert byok.material(l1["id"])["state"] == "PENDING_IMPORT"
