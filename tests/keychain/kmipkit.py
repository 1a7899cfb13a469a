"""HYOK over KMIP as a tenant does it: a key admin and a key user of acme driving the API
against a customer's KMIP key manager (tests/keychain/kmip_server.py)."""

from __future__ import annotations

from typing import Any

from apps.core.roles import Role
from tests.helpers import Api
from tests.keychain.kmip_server import KmipServer

CTX = {"order": "7"}
PAYMENTS = "/api/v1/service-keys/payments"


class Hyok:
    def __init__(self, api: Any, server: KmipServer) -> None:
        self.admin: Api = api("acme", Role.KEY_ADMIN)
        self.user: Api = api("acme", Role.KEY_USER)
        self.server = server

    def manager(self, name: str = "customer kms", **overrides: Any) -> dict[str, Any]:
        made = self.admin.post(
            "/api/v1/key-managers/",
            {
                "name": name,
                "kind": "kmip",
                "settings": {**self.server.settings, **overrides},
                "credentials": self.server.credentials,
            },
        )
        assert made.status_code == 201, made.content
        return dict(made.json_body)

    def link(self, manager_id: str, external_key_id: str, name: str = "held") -> Any:
        return self.admin.post(
            "/api/v1/customer-keys/hyok/",
            {"name": name, "key_manager_id": manager_id, "external_key_id": external_key_id},
        )

    def chain(self, external_key_id: str) -> dict[str, Any]:
        manager = self.manager()
        l1 = self.link(manager["id"], external_key_id)
        assert l1.status_code == 201, l1.content
        l3 = self.admin.post(
            "/api/v1/service-keys/", {"name": "payments", "customer_key_id": l1.json_body["id"]}
        )
        assert l3.status_code == 201, l3.content
        return dict(l1.json_body)

    def data_key(self) -> Any:
        return self.user.post(f"{PAYMENTS}/generate-data-key/", {"context": CTX})

    def decrypt(self, ciphertext: str) -> Any:
        return self.user.post(
            f"{PAYMENTS}/decrypt-data-key/", {"ciphertext": ciphertext, "context": CTX}
        )

    def state(self, key_id: str) -> dict[str, Any]:
        return dict(self.admin.get(f"/api/v1/keys/{key_id}/material/").json_body)

    def sync(self, key_id: str) -> dict[str, Any]:
        synced = self.admin.post(f"/api/v1/keys/{key_id}/sync/", {})
        assert synced.status_code == 200, synced.content
        return dict(synced.json_body)
