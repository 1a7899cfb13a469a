"""Key lifecycle: the tree, enable/disable down the chain, rotation, deletion, destruction."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from django_tenants.utils import schema_context, tenant_context

from apps.keychain import services
from apps.keychain.cache import key_cache
from apps.keychain.chain import l2_material
from apps.keychain.crypto import CiphertextInvalid
from apps.keychain.models import CustomerKeyVersion, TenantKeyVersion
from apps.keystores.registry import platform_keystore
from apps.tenants.models import Tenant
from tests.helpers import assert_problem

PAYMENTS = "/api/v1/service-keys/payments"
CTX = {"order": "1"}


def _data_key(user: Any) -> str:
    made = user.post(f"{PAYMENTS}/generate-data-key/", {"context": CTX})
    assert made.status_code == 200, made.content
    return str(made.json_body["ciphertext"])


def _decrypt(user: Any, ciphertext: str) -> Any:
    return user.post(f"{PAYMENTS}/decrypt-data-key/", {"ciphertext": ciphertext, "context": CTX})


def test_the_chain_is_shown_as_a_tree(chain: Any) -> None:
    made = chain()
    tree = made["admin"].get("/api/v1/keys/").json_body["results"]
    assert len(tree) == 1
    l1 = tree[0]
    assert l1["level"] == "L1" and l1["origin"] == "HSM" and l1["versions"][0]["primary"]
    l2 = l1["tenant_key"]
    assert l2["level"] == "L2" and l2["versions"][0]["parent_version"] == 1
    assert sorted(k["name"] for k in l2["service_keys"]) == ["ledger", "payments"]


def test_the_l1_lives_in_the_hsm_not_the_database(chain: Any) -> None:
    chain()
    with schema_context("t_acme"):
        l1v = CustomerKeyVersion.objects.get()
        assert platform_keystore().exists(l1v.handle)
        row = TenantKeyVersion.objects.get()
        assert len(bytes(row.wrapped)) == 12 + 32 + 16  # nonce, wrapped L2, tag


@pytest.mark.parametrize("level", ["L1", "L2", "L3"])
def test_disabling_any_level_stops_everything_below_and_enabling_restores_it(
    chain: Any, level: str
) -> None:
    made = chain()
    user, admin = made["user"], made["admin"]
    ciphertext = _data_key(user)
    tree = admin.get("/api/v1/keys/").json_body["results"][0]
    key_id = {
        "L1": tree["id"],
        "L2": tree["tenant_key"]["id"],
        "L3": next(k["id"] for k in tree["tenant_key"]["service_keys"] if k["name"] == "payments"),
    }[level]
    assert admin.post(f"/api/v1/keys/{key_id}/disable/", {}).status_code == 200
    refused = _decrypt(user, ciphertext)
    assert_problem(refused, 409, "key_disabled")
    assert refused.json_body["level"] == level
    assert_problem(user.post(f"{PAYMENTS}/generate-data-key/", {}), 409, "key_disabled")
    assert admin.post(f"/api/v1/keys/{key_id}/enable/", {}).status_code == 200
    assert _decrypt(user, ciphertext).status_code == 200


def test_rotating_l3_keeps_old_ciphertexts_and_rewrap_moves_them(chain: Any) -> None:
    made = chain()
    user, admin = made["user"], made["admin"]
    old = _data_key(user)
    key_id = user.get(f"{PAYMENTS}/").json_body["id"]
    rotated = admin.post(f"/api/v1/keys/{key_id}/rotate/", {})
    assert rotated.json_body["primary_version"] == 2
    assert _decrypt(user, old).json_body["key_version"] == 1
    new = user.post(f"{PAYMENTS}/generate-data-key/", {"context": CTX}).json_body
    assert new["key_version"] == 2
    moved = user.post(f"{PAYMENTS}/rewrap/", {"ciphertext": old, "context": CTX}).json_body
    assert moved["key_version"] == 2 and moved["previous_version"] == 1
    assert "plaintext" not in moved
    assert (
        _decrypt(user, moved["ciphertext"]).json_body["plaintext"]
        == _decrypt(user, old).json_body["plaintext"]
    )


@pytest.mark.parametrize("level", ["L1", "L2"])
def test_rotating_a_parent_keeps_children_working(chain: Any, level: str) -> None:
    made = chain()
    user, admin = made["user"], made["admin"]
    old = _data_key(user)
    tree = admin.get("/api/v1/keys/").json_body["results"][0]
    key_id = tree["id"] if level == "L1" else tree["tenant_key"]["id"]
    assert admin.post(f"/api/v1/keys/{key_id}/rotate/", {}).json_body["primary_version"] == 2
    assert _decrypt(user, old).status_code == 200
    # A service key created now is wrapped by the new primary versions.
    assert admin.post("/api/v1/service-keys/", {"name": "fresh"}).status_code == 201
    tree = admin.get("/api/v1/keys/").json_body["results"][0]
    fresh = next(k for k in tree["tenant_key"]["service_keys"] if k["name"] == "fresh")
    if level == "L2":
        assert fresh["versions"][0]["parent_version"] == 2
    else:
        assert [v["parent_version"] for v in tree["tenant_key"]["versions"]] == [1]


def test_deletion_can_be_cancelled(chain: Any) -> None:
    made = chain()
    user, admin = made["user"], made["admin"]
    ciphertext = _data_key(user)
    l1_id = made["l1"]["id"]
    scheduled = admin.post(f"/api/v1/keys/{l1_id}/schedule-deletion/", {"pending_days": 7})
    assert scheduled.json_body["state"] == "PENDING_DELETION"
    assert_problem(_decrypt(user, ciphertext), 409, "key_pending_deletion")
    assert admin.post(f"/api/v1/keys/{l1_id}/cancel-deletion/", {}).json_body["state"] == "DISABLED"
    admin.post(f"/api/v1/keys/{l1_id}/enable/", {})
    assert _decrypt(user, ciphertext).status_code == 200


def test_the_waiting_period_is_bounded(chain: Any) -> None:
    made = chain()
    for days in (6, 31):
        response = made["admin"].post(
            f"/api/v1/keys/{made['l1']['id']}/schedule-deletion/", {"pending_days": days}
        )
        assert_problem(response, 400, "invalid_pending_days")


def test_after_the_window_the_l1_is_destroyed_in_the_hsm_and_data_is_unrecoverable(
    chain: Any,
) -> None:
    made = chain()
    user, admin = made["user"], made["admin"]
    ciphertext = _data_key(user)
    l1_id = made["l1"]["id"]
    admin.post(f"/api/v1/keys/{l1_id}/schedule-deletion/", {"pending_days": 7})
    with tenant_context(Tenant.objects.get(slug="acme")):
        handle = CustomerKeyVersion.objects.get().handle
        assert services.deletion_sweep(now=timezone.now() + timedelta(days=6)) == []
        assert services.deletion_sweep(now=timezone.now() + timedelta(days=7, minutes=1)) == [l1_id]
    assert not platform_keystore().exists(handle)
    gone = _decrypt(user, ciphertext)
    assert_problem(gone, 410, "key_destroyed")
    assert "unrecoverable" in gone.json_body["title"]
    tree = admin.get("/api/v1/keys/").json_body["results"][0]
    assert tree["state"] == tree["tenant_key"]["state"] == "DESTROYED"
    assert {k["state"] for k in tree["tenant_key"]["service_keys"]} == {"DESTROYED"}
    assert_problem(admin.post(f"/api/v1/keys/{l1_id}/enable/", {}), 409, "invalid_key_state")


def test_a_service_key_can_be_destroyed_alone(chain: Any) -> None:
    made = chain()
    user, admin = made["user"], made["admin"]
    ciphertext = _data_key(user)
    key_id = user.get(f"{PAYMENTS}/").json_body["id"]
    admin.post(f"/api/v1/keys/{key_id}/schedule-deletion/", {"pending_days": 7})
    with tenant_context(Tenant.objects.get(slug="acme")):
        services.deletion_sweep(now=timezone.now() + timedelta(days=8))
    assert_problem(_decrypt(user, ciphertext), 410, "key_destroyed")
    ledger = user.post("/api/v1/service-keys/ledger/generate-data-key/", {})
    assert ledger.status_code == 200


def test_an_l2_copied_into_another_tenant_fails_to_unwrap(chain: Any) -> None:
    chain("acme")
    chain("globex")
    with schema_context("t_acme"):
        acme_l2 = TenantKeyVersion.objects.select_related("parent").get()
        stolen_wrapped, stolen_handle = bytes(acme_l2.wrapped), acme_l2.parent.handle
    with tenant_context(Tenant.objects.get(slug="globex")):
        victim = TenantKeyVersion.objects.select_related("parent", "key").get()
        key_cache().reset()  # make the unwrap happen in the HSM, not come from the cache
        # Copy the ciphertext alone, and then with the L1 handle too: both must fail.
        victim.wrapped = stolen_wrapped
        with pytest.raises(CiphertextInvalid):
            l2_material(victim)
        victim.parent.handle = stolen_handle
        with pytest.raises(CiphertextInvalid):
            l2_material(victim)


def test_key_admins_cannot_use_keys_and_key_users_cannot_manage_them(chain: Any) -> None:
    made = chain()
    assert_problem(
        made["admin"].post(f"{PAYMENTS}/generate-data-key/", {}), 403, "role_not_allowed"
    )
    assert_problem(
        made["user"].post("/api/v1/customer-keys/", {"name": "x"}), 403, "role_not_allowed"
    )


def test_unknown_key_ids_are_404(chain: Any) -> None:
    made = chain()
    response = made["admin"].post("/api/v1/keys/00000000-0000-0000-0000-000000000009/disable/", {})
    assert_problem(response, 404, "key_not_found")


def test_a_foreign_tenants_key_id_is_unknown_here(chain: Any, api: Any) -> None:
    globex = chain("globex")
    chain("acme")
    response = api("acme", "key_admin").post(f"/api/v1/keys/{globex['l1']['id']}/disable/", {})
    assert_problem(response, 404, "key_not_found")
