"""HYOK over KMIP against a real `pykmip-server` on loopback (throwaway CA): key managers
and their credentials, linking an external key (and refusing one that cannot serve),
rotation by linking another, and each tenant's managers its own."""

from __future__ import annotations

from typing import Any

import pytest
from django_tenants.utils import schema_context

from apps.core.roles import Role
from apps.keychain.cache import key_cache
from apps.keychain.models import ExternalKeyManager
from apps.keychain.roots import credentials_open
from apps.keystores.base import KeystoreConfigError
from apps.tenants.models import Tenant
from tests.helpers import assert_problem
from tests.keychain.kmip_server import KmipAdmin, KmipServer
from tests.keychain.kmipkit import Hyok


def test_a_linked_kmip_key_wraps_the_chain_and_data_keys_work(
    hyok_api: Hyok, customer: KmipAdmin
) -> None:
    external = customer.create_aes_key()

    l1 = hyok_api.chain(external)

    assert (l1["origin"], l1["state"]) == ("HYOK", "ENABLED")
    assert l1["versions"][0]["external_key_id"] == external
    made = hyok_api.data_key()
    assert made.status_code == 200, made.content
    back = hyok_api.decrypt(made.json_body["ciphertext"])
    assert back.json_body["plaintext"] == made.json_body["plaintext"]
    # Cold: another process (or an expired cache) unwraps the L2 through the KMIP server.
    key_cache().reset()
    assert hyok_api.decrypt(made.json_body["ciphertext"]).json_body == back.json_body


def test_the_customers_credentials_are_never_stored_or_shown_in_plain(
    hyok_api: Hyok, kmip: KmipServer
) -> None:
    manager = hyok_api.manager()
    secret_line = kmip.pki.client_key_pem.splitlines()[1]
    shown = hyok_api.admin.get(f"/api/v1/key-managers/{manager['id']}/")
    assert shown.status_code == 200 and "credentials" not in shown.json_body
    assert secret_line not in shown.content.decode()
    assert shown.json_body["settings"]["host"] == "127.0.0.1"
    with schema_context("t_acme"):
        stored = ExternalKeyManager.objects.get(pk=manager["id"])
        sealed = bytes(stored.credentials)
        assert b"PRIVATE KEY" not in sealed and secret_line.encode() not in sealed
        assert "PRIVATE KEY" not in str(stored.settings)
        tenant = Tenant.objects.get(slug="acme")
        assert (
            "PRIVATE KEY"
            in credentials_open(tenant_uid=tenant.uid, manager_id=stored.pk, sealed=sealed)[
                "client_key_pem"
            ]
        )
        # Bound to the tenant and the manager: a copy elsewhere does not open.
        other = Tenant.objects.get(slug="globex")
        with pytest.raises(KeystoreConfigError):
            credentials_open(tenant_uid=other.uid, manager_id=stored.pk, sealed=sealed)


@pytest.mark.parametrize("problem", ["unknown", "aes128", "not_active", "revoked"])
def test_linking_refuses_a_key_that_cannot_serve(
    hyok_api: Hyok, customer: KmipAdmin, problem: str
) -> None:
    external = {
        "unknown": lambda: "999999",
        "aes128": lambda: customer.create_aes_key(128),
        "not_active": lambda: customer.create_aes_key(activate=False),
        "revoked": lambda: _revoked(customer),
    }[problem]()
    manager = hyok_api.manager()

    refused = hyok_api.link(manager["id"], external)

    assert_problem(refused, 400, "external_key_invalid")
    assert hyok_api.admin.get("/api/v1/keys/").json_body["results"] == []


def _revoked(customer: KmipAdmin) -> str:
    key_id = customer.create_aes_key()
    customer.revoke(key_id)
    return key_id


def test_an_external_key_is_linked_once(hyok_api: Hyok, customer: KmipAdmin) -> None:
    external = customer.create_aes_key()
    hyok_api.chain(external)
    again = hyok_api.link(hyok_api.manager("second")["id"], external, name="again")
    assert again.status_code == 201  # another manager entry: another reference
    manager = hyok_api.admin.get("/api/v1/key-managers/").json_body["results"][1]["id"]
    assert_problem(hyok_api.link(manager, external, name="third"), 409, "external_key_linked")


def test_a_hyok_key_rotates_by_linking_another_external_key(
    hyok_api: Hyok, customer: KmipAdmin
) -> None:
    l1 = hyok_api.chain(customer.create_aes_key())
    old = hyok_api.data_key().json_body
    assert_problem(
        hyok_api.admin.post(f"/api/v1/keys/{l1['id']}/rotate/", {}), 409, "invalid_key_state"
    )
    second = customer.create_aes_key()

    linked = hyok_api.admin.post(f"/api/v1/keys/{l1['id']}/link/", {"external_key_id": second})

    assert linked.status_code == 200, linked.content
    assert [
        (v["version"], v["primary"], v["external_key_id"]) for v in linked.json_body["versions"]
    ][1] == (2, True, second)
    l2 = hyok_api.admin.get("/api/v1/keys/").json_body["results"][0]["tenant_key"]["id"]
    assert hyok_api.admin.post(f"/api/v1/keys/{l2}/rotate/", {}).status_code == 200
    key_cache().reset()
    assert hyok_api.decrypt(old["ciphertext"]).status_code == 200
    assert hyok_api.data_key().status_code == 200


def test_key_managers_belong_to_their_tenant(hyok_api: Hyok, api: Any) -> None:
    manager = hyok_api.manager()
    globex = api("globex", Role.KEY_ADMIN)
    assert_problem(
        globex.get(f"/api/v1/key-managers/{manager['id']}/"), 404, "key_manager_not_found"
    )
    assert globex.get("/api/v1/key-managers/").json_body["results"] == []
    linked = globex.post(
        "/api/v1/customer-keys/hyok/",
        {"name": "x", "key_manager_id": manager["id"], "external_key_id": "1"},
    )
    assert_problem(linked, 404, "key_manager_not_found")


def test_only_key_admins_register_key_managers(hyok_api: Hyok, api: Any) -> None:
    refused = api("acme", Role.TENANT_ADMIN).post(
        "/api/v1/key-managers/",
        {"name": "x", "kind": "kmip", "settings": {}, "credentials": {}},
    )
    assert_problem(refused, 403, "role_not_allowed")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"settings": {"host": "127.0.0.1"}}, "invalid_key_manager"),
        ({"settings": {"port": "5696"}}, "invalid_key_manager"),
        ({"settings": {"extra": "x"}}, "invalid_key_manager"),
        ({"credentials": {"client_key_pem": "not a key"}}, "key_manager_invalid"),
        ({"settings": {"host": "kms.example.com"}}, "key_manager_not_allowed"),
    ],
)
def test_bad_key_manager_settings_are_refused(
    hyok_api: Hyok, settings: Any, change: dict[str, Any], code: str
) -> None:
    settings.KCM_HYOK_KMIP_ALLOWED_HOSTS = ["127.0.0.1", "*.internal"]
    body: dict[str, Any] = {
        "name": "kms",
        "kind": "kmip",
        "settings": dict(hyok_api.server.settings),
        "credentials": dict(hyok_api.server.credentials),
    }
    if change.get("settings") == {"host": "127.0.0.1"}:
        body["settings"] = {"host": "127.0.0.1"}
    else:
        for part, values in change.items():
            body[part].update(values)
    assert_problem(hyok_api.admin.post("/api/v1/key-managers/", body), 400, code)
