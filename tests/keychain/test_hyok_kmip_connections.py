"""HYOK over KMIP: one connection shared by threads, left alone by a forked child, and a
server harness that cleans up after itself."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from django_tenants.utils import tenant_context

from apps.keychain.cache import key_cache
from apps.keychain.chain import l2_aad
from apps.keychain.models import TenantKeyVersion
from apps.keychain.roots import connection_for
from apps.tenants.models import Tenant
from tests.keychain.kmip_server import KmipAdmin, KmipServer
from tests.keychain.kmipkit import Hyok


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
