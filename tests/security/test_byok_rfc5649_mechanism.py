"""BYOK RSA_AES_KEY_WRAP on real HSMs: the AES key-wrap step is RFC 5649, which PKCS#11 names
CKM_AES_KEY_WRAP_KWP. CKM_AES_KEY_WRAP_PAD is RFC 5649 only on SoftHSM2 (on a conforming token
it is PKCS#7 padding plus RFC 3394), so KCM chooses by the token's mechanism list and trusts
_PAD only after it unwrapped a known RFC 5649 vector. SoftHSM2 has no KWP: the KWP path is shown
here by the token being asked for it (and refusing), the _PAD path by a real import."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from pkcs11 import Mechanism

from apps.keystores.base import CapabilityNotSupported, import_capability
from apps.keystores.pkcs11 import importing
from apps.keystores.pkcs11.keystore import Pkcs11Keystore
from tests.keychain.byokkit import customer_kcv, customer_wrap

KWP = "RSA_AES_KEY_WRAP_SHA_1"


@pytest.fixture
def hsm(db: Any) -> Iterator[Pkcs11Keystore]:
    yield Pkcs11Keystore.from_settings()


def _import(keystore: Pkcs11Keystore, material: bytes) -> str:
    handle, public_der = keystore.create_wrapping_key(label="kcm-test-wrapping", bits=2048)
    try:
        public_pem = serialization.load_der_public_key(public_der).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        wrapped = customer_wrap(public_pem.decode(), KWP, material)
        return keystore.import_root_key(
            wrapping_handle=handle, algorithm=KWP, wrapped=wrapped, label="kcm-test-import"
        )
    finally:
        keystore.destroy_wrapping_key(handle)


def test_softhsm_pad_is_checked_to_be_rfc5649_and_used(hsm: Pkcs11Keystore) -> None:
    assert hsm.rfc5649_mechanism == Mechanism.AES_KEY_WRAP_PAD
    assert hsm.supports(import_capability(KWP))
    material = os.urandom(32)
    imported = _import(hsm, material)
    try:
        assert hsm.key_check(imported).kcv == customer_kcv(material)
    finally:
        hsm.destroy(imported)


def test_a_pad_mechanism_that_is_not_rfc5649_is_not_offered(
    hsm: Pkcs11Keystore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conforming token lists CKM_AES_KEY_WRAP_PAD with another meaning: no RSA_AES import."""
    monkeypatch.setattr(importing, "_unwraps_rfc5649", lambda session, mechanism: False)
    assert hsm.rfc5649_mechanism is None
    assert not hsm.supports(import_capability(KWP))
    assert hsm.supports(import_capability("RSAES_OAEP_SHA_1"))


def test_a_token_listing_kwp_is_asked_for_kwp(hsm: Pkcs11Keystore) -> None:
    hsm.capabilities  # noqa: B018 (opens the session, which reads the mechanism list)
    assert hsm.session.mechanisms is not None
    hsm.session.mechanisms = hsm.session.mechanisms | {Mechanism.AES_KEY_WRAP_KWP}

    assert hsm.rfc5649_mechanism == Mechanism.AES_KEY_WRAP_KWP
    # SoftHSM2 lists no KWP and refuses it: the refusal proves KCM asked for KWP, not _PAD.
    with pytest.raises(CapabilityNotSupported):
        _import(hsm, os.urandom(32))
