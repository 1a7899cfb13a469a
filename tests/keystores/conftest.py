"""Keystores under test: the platform's PKCS#11 one on real SoftHSM2 (no mocks) and the
software one. The token comes from the environment (SOFTHSM2_CONF, KCM_PKCS11_TOKEN_LABEL,
KCM_PKCS11_PIN or KCM_PKCS11_PIN_FILE)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pkcs11
import pytest
from django.conf import settings

from apps.keystores.base import Keystore
from apps.keystores.pkcs11.keystore import Pkcs11Keystore
from apps.keystores.software import SoftwareKeystore


@pytest.fixture(scope="module")
def hsm() -> Pkcs11Keystore:
    return Pkcs11Keystore.from_settings()


@pytest.fixture(params=["pkcs11", "software"])
def provider(request: pytest.FixtureRequest, hsm: Pkcs11Keystore, tmp_path: Path) -> Keystore:
    if request.param == "pkcs11":
        return hsm
    return SoftwareKeystore(path=tmp_path / "keys.json", allowed=True)


@pytest.fixture
def root_key(provider: Keystore) -> Iterator[str]:
    handle = provider.create_root_key(label="kcm-test-provider")
    yield handle
    if provider.exists(handle):
        provider.destroy(handle)


@pytest.fixture
def hsm_key(hsm: Pkcs11Keystore) -> Iterator[str]:
    handle = hsm.create_root_key(label="kcm-test-provider")
    yield handle
    if hsm.exists(handle):
        hsm.destroy(handle)


@pytest.fixture
def token_session(hsm: Pkcs11Keystore) -> Iterator[pkcs11.Session]:
    """A second session on the token, as another HSM client in this process would open."""
    assert hsm.health()["ok"]  # logs the process in; the new session inherits the login
    lib = pkcs11.lib(settings.KCM_PKCS11_LIBRARY)
    session = lib.get_token(token_label=settings.KCM_PKCS11_TOKEN_LABEL).open(rw=True)
    yield session
    # A key the keystore did not find makes it re-initialise the library, which ends this session.
    with contextlib.suppress(pkcs11.exceptions.SessionHandleInvalid):
        session.close()
