"""A BYOK key's life: its material expires or is deleted and the same material brings
everything back; it rotates by importing new material; it stays within its tenant and its
key admins."""

from __future__ import annotations

import base64
import os
from datetime import timedelta
from typing import Any

from django.utils import timezone
from django_tenants.utils import schema_context, tenant_context

from apps.core.roles import Role
from apps.keychain import byok
from apps.keychain.cache import key_cache
from apps.keychain.models import CustomerKeyVersion, ImportToken
from apps.tenants.models import Tenant
from tests.helpers import assert_problem
from tests.keychain.byokkit import Byok, customer_kcv, customer_wrap

# --- acceptance 3: expiry and deletion; the same material restores everything ------------


def _pass_time_beyond_expiry(key_id: str) -> None:
    """As if the clock had passed the material's expiry (the test cannot wait for it)."""
    past = timezone.now() - timedelta(seconds=1)
    with schema_context("t_acme"):
        CustomerKeyVersion.objects.filter(key__pk=key_id).update(material_expires_at=past)


def test_expired_material_stops_data_keys_and_the_same_material_brings_them_back(
    provider_kind: str, byok_api: Byok
) -> None:
    l1 = byok_api.create()
    material = os.urandom(32)
    expiry = (timezone.now() + timedelta(hours=1)).isoformat()
    imported = byok_api.import_material(l1["id"], material, material_expires_at=expiry)
    assert imported.json_body["material_expires_at"] is not None
    byok_api.service_key(l1["id"])
    old = byok_api.data_key().json_body

    _pass_time_beyond_expiry(l1["id"])
    key_cache().reset()  # the cache entry's TTL has passed too, or another process asks
    assert_problem(byok_api.data_key(), 409, "key_material_expired")
    # The sweep (beat) deletes the material from the HSM and tells every process.
    with tenant_context(Tenant.objects.get(slug="acme")):
        assert byok.byok_sweep()["expired_material"] == 1
    assert_problem(byok_api.decrypt(old["ciphertext"]), 409, "key_material_expired")
    assert byok_api.material(l1["id"])["versions"][0]["material_present"] is False

    again = byok_api.import_material(l1["id"], material)

    assert again.status_code == 200, again.content
    assert again.json_body["version"] == 1
    assert again.json_body["key_check_value"] == customer_kcv(material)
    back = byok_api.decrypt(old["ciphertext"])
    assert back.status_code == 200 and back.json_body["plaintext"] == old["plaintext"]


def test_deleted_material_stops_data_keys_until_the_same_material_returns(
    provider_kind: str, byok_api: Byok
) -> None:
    l1 = byok_api.create()
    material = os.urandom(32)
    byok_api.import_material(l1["id"], material)
    byok_api.service_key(l1["id"])
    old = byok_api.data_key().json_body

    deleted = byok_api.admin.post(f"/api/v1/keys/{l1['id']}/delete-imported-material/", {})

    assert deleted.status_code == 200 and deleted.json_body["state"] == "PENDING_IMPORT"
    assert "deleted" in deleted.json_body["state_reason"]
    assert_problem(byok_api.decrypt(old["ciphertext"]), 409, "key_pending_import")
    assert_problem(byok_api.data_key(), 409, "key_pending_import")
    assert_problem(
        byok_api.import_material(l1["id"], os.urandom(32)), 409, "import_material_mismatch"
    )

    assert byok_api.import_material(l1["id"], material).status_code == 200

    back = byok_api.decrypt(old["ciphertext"])
    assert back.status_code == 200 and back.json_body["plaintext"] == old["plaintext"]


def test_a_byok_key_rotates_by_importing_new_material_as_a_new_version(
    provider_kind: str, byok_api: Byok
) -> None:
    l1 = byok_api.create()
    first, second = os.urandom(32), os.urandom(32)
    byok_api.import_material(l1["id"], first)
    byok_api.service_key(l1["id"])
    old = byok_api.data_key().json_body
    assert_problem(
        byok_api.admin.post(f"/api/v1/keys/{l1['id']}/rotate/", {}), 409, "invalid_key_state"
    )
    assert_problem(
        byok_api.import_material(l1["id"], first, new_version=True), 409, "import_material_not_new"
    )

    rotated = byok_api.import_material(l1["id"], second, new_version=True)

    assert rotated.status_code == 200, rotated.content
    assert rotated.json_body["version"] == 2
    assert rotated.json_body["key_check_value"] == customer_kcv(second)
    versions = rotated.json_body["key"]["versions"]
    assert [(v["version"], v["primary"], v["key_check_value"]) for v in versions] == [
        (1, False, customer_kcv(first)),
        (2, True, customer_kcv(second)),
    ]
    # The tenant key rotates under the new version; what was made before still decrypts.
    l2 = byok_api.admin.get("/api/v1/keys/").json_body["results"][0]["tenant_key"]["id"]
    assert byok_api.admin.post(f"/api/v1/keys/{l2}/rotate/", {}).status_code == 200
    assert byok_api.decrypt(old["ciphertext"]).status_code == 200
    assert byok_api.data_key().status_code == 200


def test_a_pending_key_takes_no_service_keys(byok_api: Byok) -> None:
    l1 = byok_api.create()
    refused = byok_api.admin.post(
        "/api/v1/service-keys/", {"name": "payments", "customer_key_id": l1["id"]}
    )
    assert_problem(refused, 409, "key_pending_import")


def test_hsm_keys_take_no_imported_material(byok_api: Byok) -> None:
    hsm = byok_api.admin.post("/api/v1/customer-keys/", {"name": "root"}).json_body
    refused = byok_api.parameters(hsm["id"], "RSAES_OAEP_SHA_1")
    assert_problem(refused, 409, "invalid_key_state")


def test_spent_and_expired_wrapping_keys_leave_the_hsm(byok_api: Byok) -> None:
    l1 = byok_api.create()
    byok_api.import_material(l1["id"], os.urandom(32))
    byok_api.parameters(l1["id"], "RSAES_OAEP_SHA_1")
    with schema_context("t_acme"):
        assert byok.byok_sweep()["wrapping_keys_removed"] == 1  # the used one
        ImportToken.objects.update(expires_at=timezone.now())
        assert byok.byok_sweep()["wrapping_keys_removed"] == 1  # the expired one
        assert not ImportToken.objects.exclude(wrapping_handle="").exists()


# --- isolation --------------------------------------------------------------------------


def test_another_tenant_cannot_see_or_import_into_the_key(byok_api: Byok, api: Any) -> None:
    l1 = byok_api.create()
    params = byok_api.parameters(l1["id"], "RSAES_OAEP_SHA_1").json_body
    globex = api("globex", Role.KEY_ADMIN)
    assert_problem(globex.get(f"/api/v1/keys/{l1['id']}/material/"), 404, "key_not_found")
    wrapped = customer_wrap(params["public_key_pem"], "RSAES_OAEP_SHA_1", os.urandom(32))
    stolen = globex.post(
        f"/api/v1/keys/{l1['id']}/import/",
        {
            "import_token": params["import_token"],
            "wrapped_material": base64.b64encode(wrapped).decode(),
        },
    )
    assert_problem(stolen, 404, "key_not_found")
    acme_token_in_globex = api("acme", Role.KEY_ADMIN, on="globex").get(
        f"/api/v1/keys/{l1['id']}/material/"
    )
    assert_problem(acme_token_in_globex, 403, "wrong_tenant")


def test_a_key_user_cannot_import(byok_api: Byok) -> None:
    l1 = byok_api.create()
    refused = byok_api.user.post(
        f"/api/v1/keys/{l1['id']}/import-parameters/", {"algorithm": "RSAES_OAEP_SHA_1"}
    )
    assert_problem(refused, 403, "role_not_allowed")
