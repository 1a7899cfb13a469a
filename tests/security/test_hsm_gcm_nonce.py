"""An HSM that generates its own AES-GCM IV (and ignores the caller's) must not leave KCM with
an L2 that never unwraps: the wrap is opened again before the L2 is committed."""

from __future__ import annotations

import os
from typing import Any

import pytest
from django_tenants.utils import tenant_context

from apps.core.roles import Role
from apps.keychain.models import CustomerKey, TenantKey
from apps.keystores.pkcs11 import aes
from apps.keystores.registry import reset_platform_keystore
from apps.tenants.models import Tenant
from tests.helpers import assert_problem


@pytest.fixture
def hsm_picks_its_own_iv(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    settings.KCM_HSM_PROVIDER = "pkcs11"
    reset_platform_keystore()
    real = aes.gcm_encrypt

    def own_iv(key: Any, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return real(key, os.urandom(len(nonce)), plaintext, aad)  # as such an HSM does

    monkeypatch.setattr(aes, "gcm_encrypt", own_iv)
    yield
    reset_platform_keystore()


def _counts() -> tuple[int, int]:
    with tenant_context(Tenant.objects.get(slug="acme")):
        return CustomerKey.objects.count(), TenantKey.objects.count()


def test_it_commits_no_l2_the_hsm_cannot_unwrap(api: Any, hsm_picks_its_own_iv: Any) -> None:
    before = _counts()

    made = api("acme", Role.KEY_ADMIN).post("/api/v1/customer-keys/", {"name": "root-gcm"})

    assert_problem(made, 503, "hsm_unavailable")
    assert "nonce" in made.json_body["detail"]
    assert _counts() == before
