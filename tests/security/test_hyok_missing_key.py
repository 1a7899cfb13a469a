"""HYOK: one "no such key" from a customer's key manager does not destroy the key for good.

A manager may answer "not found" by mistake (a wrong partition, a restore from an old backup, a
replica behind). Before, a single such answer (to a request or to the sync) marked the L1
DESTROYED, which no later answer could undo. Now the first makes it UNAVAILABLE, and only a sync
at least KCM_HYOK_DESTROY_CONFIRM_SECONDS later that gets the same answer makes it DESTROYED.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from django_tenants.utils import tenant_context

from apps.keychain.cache import key_cache
from apps.keychain.models import CustomerKey
from apps.keystores.registry import forget_connections
from apps.tenants.models import Tenant
from tests.helpers import assert_problem
from tests.keychain.test_hyok_pkcs11 import CustomerToken, Hyok


@pytest.fixture(scope="module")
def token() -> Iterator[CustomerToken]:
    created = CustomerToken()
    yield created
    created.delete()


@pytest.fixture
def hyok(api: Any, token: CustomerToken, settings: Any) -> Iterator[Hyok]:
    settings.KCM_HYOK_TIMEOUT_SECONDS = 1
    settings.KCM_HYOK_DESTROY_CONFIRM_SECONDS = 600
    forget_connections()
    yield Hyok(api, token)
    forget_connections()


def _as_if_first_seen(key_id: str, seconds_ago: int) -> None:
    with tenant_context(Tenant.objects.get(slug="acme")):
        updated = CustomerKey.objects.filter(pk=key_id).update(
            missing_since=timezone.now() - timedelta(seconds=seconds_ago)
        )
    assert updated == 1


def test_one_not_found_at_a_sync_is_not_destruction(hyok: Hyok, token: CustomerToken) -> None:
    label = token.create_key(f"k-{secrets.token_hex(3)}")
    l1 = hyok.chain(label)
    made = hyok.data_key().json_body
    token.destroy(label)

    first = hyok.sync(l1["id"])
    assert first["state"] == "UNAVAILABLE", first
    assert "no such key" in first["state_reason"] and "not confirmed" in first["state_reason"]
    assert hyok.sync(l1["id"])["state"] == "UNAVAILABLE"  # too soon to confirm
    key_cache().reset()
    assert_problem(hyok.decrypt(made["ciphertext"]), 503, "external_key_unavailable")

    _as_if_first_seen(l1["id"], 601)
    confirmed = hyok.sync(l1["id"])
    assert confirmed["state"] == "DESTROYED", confirmed
    assert_problem(hyok.decrypt(made["ciphertext"]), 410, "key_destroyed")


def test_a_not_found_in_a_request_is_not_destruction(hyok: Hyok, token: CustomerToken) -> None:
    label = token.create_key(f"k-{secrets.token_hex(3)}")
    l1 = hyok.chain(label)
    made = hyok.data_key().json_body
    token.destroy(label)
    key_cache().reset()

    assert_problem(hyok.decrypt(made["ciphertext"]), 503, "external_key_unavailable")
    assert hyok.state(l1["id"])["state"] == "UNAVAILABLE"
    # Even long after, only a sync confirms, never a request.
    _as_if_first_seen(l1["id"], 601)
    assert_problem(hyok.decrypt(made["ciphertext"]), 503, "external_key_unavailable")
    assert hyok.state(l1["id"])["state"] == "UNAVAILABLE"


def test_a_key_seen_again_starts_the_wait_over(hyok: Hyok, token: CustomerToken) -> None:
    """A "not found" by mistake, then the key answers again: a later "not found" is a first
    one again, not the confirmation of the old."""
    from apps.keychain.revocation import external_key_missing  # (new with the fix)

    label = token.create_key(f"k-{secrets.token_hex(3)}")
    l1 = hyok.chain(label)
    with tenant_context(Tenant.objects.get(slug="acme")):
        external_key_missing(l1["id"], "The key manager says: no such key", confirming=False)
    assert hyok.state(l1["id"])["state"] == "UNAVAILABLE"
    _as_if_first_seen(l1["id"], 601)

    assert hyok.sync(l1["id"])["state"] == "ENABLED"
    token.destroy(label)
    assert hyok.sync(l1["id"])["state"] == "UNAVAILABLE"
