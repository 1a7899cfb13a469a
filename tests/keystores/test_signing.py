"""Signing keys (for audit checkpoints): the private half stays in the provider."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from apps.keystores.base import CAP_SIGN, Keystore, RootKeyNotFound
from apps.keystores.registry import platform_keystore
from apps.keystores.software import SoftwareKeystore


@pytest.fixture(params=["pkcs11", "software"])
def provider(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Keystore]:
    if request.param == "pkcs11":
        yield platform_keystore()
    else:
        yield SoftwareKeystore(path=tmp_path / "keys.json", allowed=True)


def test_a_signature_verifies_with_the_exported_public_key_only(provider: Keystore) -> None:
    assert provider.supports(CAP_SIGN)
    handle = provider.create_signing_key(label="test audit")
    public = load_der_public_key(provider.public_key_der(handle))
    assert isinstance(public, ec.EllipticCurvePublicKey)
    signature = provider.sign(handle, b"checkpoint 42")
    public.verify(signature, b"checkpoint 42", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        public.verify(signature, b"checkpoint 43", ec.ECDSA(hashes.SHA256()))


def test_the_pkcs11_signing_key_is_sensitive_and_not_extractable() -> None:
    from pkcs11 import Attribute, ObjectClass

    provider = platform_keystore()
    handle = provider.create_signing_key(label="test audit")
    # Through the provider's own session and lock: closing a session would log the process out.
    private = provider.session.run(  # type: ignore[attr-defined]
        lambda s: s.get_key(object_class=ObjectClass.PRIVATE_KEY, id=bytes.fromhex(handle))
    )
    assert private[Attribute.SENSITIVE] and not private[Attribute.EXTRACTABLE]
    assert private[Attribute.PRIVATE] and private[Attribute.TOKEN]


def test_an_unknown_signing_key_is_refused(provider: Keystore) -> None:
    with pytest.raises(RootKeyNotFound):
        provider.sign("ab" * 16, b"x")
