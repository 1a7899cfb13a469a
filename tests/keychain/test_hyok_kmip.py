"""HYOK over KMIP against a real `pykmip-server` on loopback (started here, throwaway CA):
link, data keys, revocation and destruction at the source, an unreachable server, recovery."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django_tenants.utils import schema_context, tenant_context

from apps.core.roles import Role
from apps.keychain import tasks as keychain_tasks
from apps.keychain.cache import key_cache
from apps.keychain.chain import l2_aad
from apps.keychain.models import ExternalKeyManager, TenantKeyVersion
from apps.keychain.roots import connection_for, credentials_open
from apps.keystores.base import KeystoreConfigError
from apps.keystores.registry import forget_connections
from apps.tenants.models import Tenant
from tests.helpers import Api, assert_problem
from tests.keychain.kmip_server import KmipAdmin, KmipServer

CTX = {"order": "7"}
PAYMENTS = "/api/v1/service-keys/payments"


@pytest.fixture(scope="module")
def kmip_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmipServer]:
    with KmipServer(tmp_path_factory.mktemp("kmip")) as server:
        yield server


@pytest.fixture
def kmip(kmip_server: KmipServer, settings: Any) -> Iterator[KmipServer]:
    """The server, running; connectors and circuit breakers fresh for each test."""
    settings.KCM_HYOK_TIMEOUT_SECONDS = 1
    settings.KCM_HYOK_BREAKER_FAILURES = 2
    settings.KCM_HYOK_BREAKER_RESET_SECONDS = 30
    kmip_server.start()
    forget_connections()
    yield kmip_server
    forget_connections()
    kmip_server.start()


@pytest.fixture
def customer(kmip: KmipServer) -> Iterator[KmipAdmin]:
    with kmip.admin() as admin:
        yield admin


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


@pytest.fixture
def hyok_api(api: Any, kmip: KmipServer) -> Hyok:
    return Hyok(api, kmip)


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


def test_revocation_at_the_source_refuses_within_the_ttl_and_at_once_on_a_failed_unwrap(
    hyok_api: Hyok, customer: KmipAdmin, monkeypatch: pytest.MonkeyPatch
) -> None:
    external = customer.create_aes_key()
    l1 = hyok_api.chain(external)
    made = hyok_api.data_key().json_body
    monkeypatch.setattr(key_cache(), "ttl", 1.0)

    customer.revoke(external)
    time.sleep(1.1)  # the cached keys expire: the next use must unwrap at the source

    refused = hyok_api.decrypt(made["ciphertext"])
    assert_problem(refused, 409, "external_key_forbidden")
    state = hyok_api.state(l1["id"])
    assert state["state"] == "FORBIDDEN" and "PERMISSION_DENIED" in state["state_reason"]
    assert_problem(hyok_api.data_key(), 409, "external_key_forbidden")
    assert hyok_api.sync(l1["id"])["state"] == "FORBIDDEN"  # a sync keeps the refusal
    assert_problem(hyok_api.data_key(), 409, "external_key_forbidden")


def test_the_sync_applies_a_revocation_to_every_process_at_once(
    hyok_api: Hyok, customer: KmipAdmin
) -> None:
    external = customer.create_aes_key()
    l1 = hyok_api.chain(external)
    made = hyok_api.data_key().json_body
    assert hyok_api.decrypt(made["ciphertext"]).status_code == 200  # warm cache

    customer.revoke(external)
    synced = hyok_api.sync(l1["id"])

    assert synced["state"] == "FORBIDDEN" and "COMPROMISED" in synced["state_reason"]
    assert_problem(hyok_api.decrypt(made["ciphertext"]), 409, "external_key_forbidden")


def test_a_key_destroyed_at_the_source_is_destroyed_here(
    hyok_api: Hyok, customer: KmipAdmin
) -> None:
    external = customer.create_aes_key()
    l1 = hyok_api.chain(external)
    made = hyok_api.data_key().json_body

    customer.destroy(external)
    with tenant_context(Tenant.objects.get(slug="acme")):
        states = keychain_tasks.hyok_sync()  # what beat runs

    assert states == {"acme": {l1["id"]: "DESTROYED"}}
    state = hyok_api.state(l1["id"])
    assert state["state"] == "DESTROYED" and "ITEM_NOT_FOUND" in state["state_reason"]
    assert_problem(hyok_api.decrypt(made["ciphertext"]), 410, "key_destroyed")


def test_a_stopped_key_manager_gives_quick_503s_and_the_key_recovers_after_a_restart(
    hyok_api: Hyok, customer: KmipAdmin, kmip: KmipServer
) -> None:
    external = customer.create_aes_key()
    l1 = hyok_api.chain(external)
    made = hyok_api.data_key().json_body

    kmip.stop()
    key_cache().reset()  # requests that need the key manager (cold caches)
    timings = []
    for _ in range(3):
        began = time.monotonic()
        assert_problem(hyok_api.decrypt(made["ciphertext"]), 503, "external_key_unavailable")
        timings.append(time.monotonic() - began)
    assert max(timings) < 1.0, timings
    # Two failures in a row opened the breaker: the key is marked for every process.
    state = hyok_api.state(l1["id"])
    assert state["state"] == "UNAVAILABLE" and "cannot be reached" in state["state_reason"]
    assert hyok_api.sync(l1["id"])["state"] == "UNAVAILABLE"

    kmip.start()
    assert hyok_api.sync(l1["id"])["state"] == "ENABLED"

    back = hyok_api.decrypt(made["ciphertext"])
    assert back.status_code == 200 and back.json_body["plaintext"] == made["plaintext"]


def test_a_key_manager_that_never_answers_costs_a_bounded_wait(hyok_api: Hyok) -> None:
    # A listening socket that never accepts: TCP connects, TLS never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        manager = hyok_api.manager(port=silent.getsockname()[1])
        began = time.monotonic()
        refused = hyok_api.link(manager["id"], "1")
        waited = time.monotonic() - began
    assert_problem(refused, 503, "external_key_unavailable")
    assert waited < 3.0, waited


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


def test_concurrent_unwraps_share_one_connection_safely(
    hyok_api: Hyok, customer: KmipAdmin
) -> None:
    hyok_api.chain(customer.create_aes_key())
    made = hyok_api.data_key().json_body
    acme = Tenant.objects.get(slug="acme")
    with tenant_context(acme):
        l2v = TenantKeyVersion.objects.select_related("parent__external_manager", "key").get()
        parent = l2v.parent
        assert parent.external_manager is not None
        connection = connection_for(parent.external_manager, tenant_uid=acme.uid)
        blob, aad = bytes(l2v.wrapped), l2_aad(l2v, l2v.key)
    results: list[bytes] = []
    errors: list[BaseException] = []

    def unwrap() -> None:
        try:
            for _ in range(5):
                results.append(
                    connection.breaker.call(
                        lambda: connection.keystore.decrypt(parent.external_key_id, blob, aad)
                    )
                )
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=unwrap) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 40 and len(set(results)) == 1
    assert hyok_api.decrypt(made["ciphertext"]).status_code == 200


def test_a_forked_child_leaves_the_parents_kmip_connection_alone(
    hyok_api: Hyok, customer: KmipAdmin
) -> None:
    hyok_api.chain(customer.create_aes_key())
    made = hyok_api.data_key().json_body
    key_cache().reset()
    assert hyok_api.decrypt(made["ciphertext"]).status_code == 200  # a KMIP connection is open

    child = os.fork()
    if child == 0:  # as a new worker: it starts without connectors; the parent's stay open
        from apps.keystores import registry

        os._exit(0 if not registry._connections else 1)
    assert os.waitpid(child, 0)[1] == 0

    key_cache().reset()
    assert hyok_api.decrypt(made["ciphertext"]).status_code == 200


def test_the_server_harness_cleans_up(tmp_path: Path) -> None:
    with KmipServer(tmp_path / "kmip") as server:
        pid = server.process.pid if server.process else 0
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
