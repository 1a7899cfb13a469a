"""HYOK over KMIP: what happens at the source reaches KCM. Revocation and destruction in
the customer's KMIP server, a stopped or silent server, and recovery after a restart."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from django_tenants.utils import tenant_context

from apps.keychain import tasks as keychain_tasks
from apps.keychain.cache import key_cache
from apps.tenants.models import Tenant
from tests.helpers import assert_problem
from tests.keychain.kmip_server import KmipAdmin, KmipServer
from tests.keychain.kmipkit import Hyok


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
    hyok_api: Hyok, customer: KmipAdmin, settings: Any
) -> None:
    settings.KCM_HYOK_DESTROY_CONFIRM_SECONDS = 0
    external = customer.create_aes_key()
    l1 = hyok_api.chain(external)
    made = hyok_api.data_key().json_body

    customer.destroy(external)
    with tenant_context(Tenant.objects.get(slug="acme")):
        first_look = keychain_tasks.hyok_sync()  # what beat runs
        states = keychain_tasks.hyok_sync()  # the next run confirms "no such key"

    assert first_look == {"acme": {l1["id"]: "UNAVAILABLE"}}
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
