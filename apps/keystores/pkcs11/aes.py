"""AES-256 root keys in a PKCS#11 token: generate, find, AES-GCM encrypt and decrypt.

Functions take a logged-in session and run under the process-wide PKCS#11 lock (see
`session.TokenSession.run`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, cast

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from apps.keystores.base import TAG_BYTES, KeystoreError, RootKeyIntegrityError

ROOT_KEY_TEMPLATE = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.MODIFIABLE: False,
    Attribute.ENCRYPT: True,
    Attribute.DECRYPT: True,
    Attribute.WRAP: False,
    Attribute.UNWRAP: False,
    Attribute.SIGN: False,
    Attribute.VERIFY: False,
    Attribute.DERIVE: False,
}
# A failed GCM tag check: SoftHSM reports GeneralError, other tokens the standard codes.
BAD_CIPHERTEXT = (p11.GeneralError, p11.EncryptedDataInvalid, p11.EncryptedDataLenRange)
# A cached object handle no longer names an object (destroyed by another session or process).
STALE_OBJECT = (p11.ObjectHandleInvalid, p11.KeyHandleInvalid)


class AesKey(Protocol):
    def encrypt(self, data: bytes, **kwargs: Any) -> bytes | Iterator[bytes]: ...
    def decrypt(self, data: bytes, **kwargs: Any) -> bytes | Iterator[bytes]: ...
    def destroy(self) -> None: ...


def generate(session: pkcs11.Session, *, key_id: bytes, label: str) -> AesKey:
    key = session.generate_key(
        KeyType.AES, 256, id=key_id, label=label, store=True, template=ROOT_KEY_TEMPLATE
    )
    return cast(AesKey, key)


def find(session: pkcs11.Session, key_id: bytes) -> AesKey | None:
    try:
        key = session.get_key(object_class=ObjectClass.SECRET_KEY, id=key_id)
    except p11.NoSuchKey:
        return None
    return cast(AesKey, key)


def gcm_encrypt(key: AesKey, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    params = pkcs11.GCMParams(nonce, aad)
    return _as_bytes(key.encrypt(plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=params))


class NonceNotHonoured(KeystoreError):
    """The HSM's AES-GCM output does not open with the nonce KCM gave it."""

    code = "hsm_gcm_nonce_not_honoured"


def gcm_seal_verified(key: AesKey, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """`gcm_encrypt`, then open the result again before anyone stores it. Some HSMs generate
    the GCM IV themselves (FIPS mode) and ignore the caller's, or write theirs back into the
    mechanism parameters, which python-pkcs11 does not read back: a blob stored with our nonce
    would then never unwrap. Wraps are rare (a new or rewrapped L2), so the check is cheap."""
    sealed = gcm_encrypt(key, nonce, plaintext, aad)
    try:
        if (
            len(sealed) == len(plaintext) + TAG_BYTES
            and gcm_decrypt(key, nonce, sealed, aad) == plaintext
        ):
            return sealed
    except RootKeyIntegrityError:
        pass
    raise NonceNotHonoured(
        "the HSM's AES-GCM output does not open with the nonce given (does it generate its own "
        "IV?); nothing was stored"
    )


def gcm_decrypt(key: AesKey, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
    params = pkcs11.GCMParams(nonce, aad)
    try:
        return _as_bytes(key.decrypt(sealed, mechanism=Mechanism.AES_GCM, mechanism_param=params))
    except BAD_CIPHERTEXT:
        # A failed C_Decrypt ends the operation; the session stays usable.
        raise RootKeyIntegrityError("ciphertext failed authentication") from None


def _as_bytes(result: bytes | Iterator[bytes]) -> bytes:
    assert isinstance(result, bytes)  # single-part operations return bytes
    return result
