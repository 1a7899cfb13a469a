"""The contract every keystore keeps, on real SoftHSM2 (no mocks) and on the software one:
round trips under a fresh nonce bound to their AAD, tampering refused, destroyed or unknown
keys not found, capabilities and health. No database is used."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from apps.keystores.base import (
    CAP_CREATE,
    CAP_DESTROY,
    CAP_WRAP,
    Keystore,
    RootKeyIntegrityError,
    RootKeyNotFound,
)
from tests.keystores.keystorekit import AAD


def test_round_trip_returns_the_plaintext_under_a_fresh_nonce(
    provider: Keystore, root_key: str
) -> None:
    first = provider.encrypt(root_key, b"an L2 key, 32 bytes long.......", AAD)
    second = provider.encrypt(root_key, b"an L2 key, 32 bytes long.......", AAD)

    assert len(first) == 12 + 31 + 16
    assert first[:12] != second[:12]
    assert provider.decrypt(root_key, first, AAD) == b"an L2 key, 32 bytes long......."
    assert provider.decrypt(root_key, second, AAD) == b"an L2 key, 32 bytes long......."


def test_empty_plaintext_and_empty_aad_round_trip(provider: Keystore, root_key: str) -> None:
    blob = provider.encrypt(root_key, b"", b"")

    assert len(blob) == 28
    assert provider.decrypt(root_key, blob, b"") == b""


def _flip(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 0x01]) + blob[index + 1 :]


TAMPERINGS: dict[str, Callable[[bytes], tuple[bytes, bytes]]] = {
    "wrong_aad": lambda blob: (blob, AAD.replace(b"acme", b"evil")),
    "missing_aad": lambda blob: (blob, b""),
    "flipped_nonce": lambda blob: (_flip(blob, 0), AAD),
    "flipped_ciphertext": lambda blob: (_flip(blob, 12), AAD),
    "flipped_tag": lambda blob: (_flip(blob, len(blob) - 1), AAD),
    "truncated_tag": lambda blob: (blob[:-1], AAD),
    "truncated_to_nonce_and_tag": lambda blob: (blob[:28], AAD),
    "shorter_than_nonce_and_tag": lambda blob: (blob[:27], AAD),
    "empty": lambda blob: (b"", AAD),
}


@pytest.mark.parametrize("tampering", TAMPERINGS)
def test_tampered_or_misbound_ciphertext_is_rejected_and_the_provider_keeps_working(
    provider: Keystore, root_key: str, tampering: str
) -> None:
    blob = provider.encrypt(root_key, b"secret L2 key material", AAD)
    bad_blob, bad_aad = TAMPERINGS[tampering](blob)

    with pytest.raises(RootKeyIntegrityError) as caught:
        provider.decrypt(root_key, bad_blob, bad_aad)

    assert caught.value.code == "ciphertext_invalid"
    assert "secret" not in str(caught.value)
    assert provider.decrypt(root_key, blob, AAD) == b"secret L2 key material"
    assert provider.decrypt(root_key, provider.encrypt(root_key, b"x", AAD), AAD) == b"x"


def test_ciphertext_from_another_root_key_is_rejected(provider: Keystore, root_key: str) -> None:
    other = provider.create_root_key(label="kcm-test-other")
    try:
        blob = provider.encrypt(other, b"payload", AAD)
        with pytest.raises(RootKeyIntegrityError):
            provider.decrypt(root_key, blob, AAD)
    finally:
        provider.destroy(other)


def test_destroyed_root_key_can_no_longer_be_used(provider: Keystore, root_key: str) -> None:
    blob = provider.encrypt(root_key, b"payload", AAD)

    provider.destroy(root_key)

    assert not provider.exists(root_key)
    with pytest.raises(RootKeyNotFound) as caught:
        provider.decrypt(root_key, blob, AAD)
    assert caught.value.code == "root_key_not_found"
    with pytest.raises(RootKeyNotFound):
        provider.encrypt(root_key, b"payload", AAD)
    with pytest.raises(RootKeyNotFound):
        provider.destroy(root_key)


@pytest.mark.parametrize("handle", ["00" * 16, "", "not-hex", "AB" * 16, "00" * 17, "../etc"])
def test_unknown_or_malformed_handles_name_no_key(provider: Keystore, handle: str) -> None:
    assert not provider.exists(handle)
    with pytest.raises(RootKeyNotFound):
        provider.encrypt(handle, b"payload", AAD)
    with pytest.raises(RootKeyNotFound):
        provider.destroy(handle)


def test_supports_answers_for_known_and_unknown_capabilities(provider: Keystore) -> None:
    assert provider.supports(CAP_CREATE)
    assert provider.supports(CAP_DESTROY)
    assert provider.supports(CAP_WRAP)
    # BYOK: both import SHA-1 OAEP material; SHA-256 OAEP only the software one (SoftHSM2 lacks
    # it); nobody imports PKCS#1 v1.5-wrapped material.
    assert provider.supports("import:RSAES_OAEP_SHA_1")
    assert provider.supports("import:RSA_AES_KEY_WRAP_SHA_1")
    assert provider.supports("import:RSAES_OAEP_SHA_256") == (provider.name == "software")
    assert not provider.supports("import:RSAES_PKCS1_V1_5")
    assert not provider.supports("teleport")


def test_health_reports_ok(provider: Keystore) -> None:
    report = provider.health()

    assert report["ok"] is True
    assert report["keystore"] == provider.name
