"""The dashboard's key-manager health against a real KMIP server (tests/keychain/kmip_server.py):
healthy while it answers, breaker open and the key UNAVAILABLE while it is down, healthy again
after it is back."""

from __future__ import annotations

from typing import Any

from apps.keychain.cache import key_cache
from tests.keychain.conftest import customer, hyok_api, kmip, kmip_server  # noqa: F401
from tests.keychain.kmip_server import KmipAdmin, KmipServer
from tests.keychain.kmipkit import Hyok

URL = "/api/v1/dashboard/"


def _managers(hyok: Hyok) -> list[dict[str, Any]]:
    response = hyok.admin.get(URL)
    assert response.status_code == 200, response.content
    return [
        {k: m[k] for k in ("name", "kind", "keys_by_state", "breaker", "healthy")}
        for m in response.json_body["key_managers"]
    ]


def test_it_shows_a_key_manager_down_and_back(
    hyok_api: Hyok,  # noqa: F811
    customer: KmipAdmin,  # noqa: F811
    kmip: KmipServer,  # noqa: F811
) -> None:
    l1 = hyok_api.chain(customer.create_aes_key())
    made = hyok_api.data_key().json_body
    healthy = {"name": "customer kms", "kind": "kmip", "keys_by_state": {"ENABLED": 1}}
    assert _managers(hyok_api) == [{**healthy, "breaker": "closed", "healthy": True}]

    kmip.stop()
    key_cache().reset()
    for _ in range(2):  # KCM_HYOK_BREAKER_FAILURES in the kmip fixture
        assert hyok_api.decrypt(made["ciphertext"]).status_code == 503
    assert _managers(hyok_api) == [
        {**healthy, "keys_by_state": {"UNAVAILABLE": 1}, "breaker": "open", "healthy": False}
    ]

    kmip.start()
    assert hyok_api.sync(l1["id"])["state"] == "ENABLED"
    assert _managers(hyok_api) == [{**healthy, "breaker": "closed", "healthy": True}]
