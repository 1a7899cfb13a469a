"""BYOK inside a PKCS#11 token: RSA wrapping key pairs and unwrapping of customer material.

Every function takes a logged-in session and is called by `Pkcs11Keystore` under the process-wide
PKCS#11 lock. The material is only ever unwrapped inside the token:

- RSAES_OAEP_SHA_*: one C_UnwrapKey with CKM_RSA_PKCS_OAEP.
- RSA_AES_KEY_WRAP_SHA_*: the two-step form of CKM_RSA_AES_KEY_WRAP (SoftHSM2 2.6.1 lacks the
  single mechanism): OAEP-unwrap the ephemeral AES key into a session object, unwrap the
  material with the token's RFC 5649 mechanism under it, destroy the ephemeral key. That
  mechanism is CKM_AES_KEY_WRAP_KWP on tokens that follow PKCS#11 (there CKM_AES_KEY_WRAP_PAD
  is PKCS#7 padding plus RFC 3394, another format); SoftHSM2 has no KWP and implements RFC 5649
  as CKM_AES_KEY_WRAP_PAD. `rfc5649_mechanism` chooses by the mechanism list, and trusts
  CKM_AES_KEY_WRAP_PAD only after it unwrapped a known RFC 5649 vector.

SoftHSM2 2.6.1 leaves CKA_VALUE_LEN at 0 on unwrapped keys, so when a token does not tell the
length, it is measured without the material leaving the token in clear: the same blob is
unwrapped once more into an extractable session copy, which is wrapped (CKM_AES_KEY_WRAP, no
padding: it fails unless the length is a multiple of 8) under a session key generated for the
purpose; only the length of that ciphertext is used, and both session objects are destroyed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import pkcs11
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding
from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from apps.keystores.base import (
    IMPORTED_KEY_BYTES,
    CapabilityNotSupported,
    ImportedKeyLengthInvalid,
    ImportedMaterialTampered,
    KeyCheck,
    RootKeyNotFound,
    WrappingKeyMismatch,
    key_check_of,
    oaep_hash_of,
    split_wrapped,
)

_WRAPPING_PUBLIC = {
    Attribute.TOKEN: True,
    Attribute.WRAP: True,
    Attribute.ENCRYPT: False,
    Attribute.VERIFY: False,
    Attribute.MODIFIABLE: False,
}
_WRAPPING_PRIVATE = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.MODIFIABLE: False,
    Attribute.UNWRAP: True,
    Attribute.DECRYPT: False,
    Attribute.SIGN: False,
    Attribute.DERIVE: False,
}
# The ephemeral AES key of RSA_AES_KEY_WRAP: a session object that can only unwrap.
_EPHEMERAL = {
    Attribute.TOKEN: False,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.UNWRAP: True,
    Attribute.WRAP: False,
    Attribute.ENCRYPT: False,
    Attribute.DECRYPT: False,
}
# Length measurement (see the module docstring): the copy, and the key that wraps it.
_PROBE_COPY = {
    Attribute.TOKEN: False,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: True,
    Attribute.ENCRYPT: False,
    Attribute.DECRYPT: False,
    Attribute.WRAP: False,
    Attribute.UNWRAP: False,
}
_PROBE_KEK = {
    Attribute.TOKEN: False,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.WRAP: True,
    Attribute.UNWRAP: False,
    Attribute.ENCRYPT: False,
    Attribute.DECRYPT: False,
}
# What a token answers when a step's integrity or padding check fails (SoftHSM: GeneralError).
_UNWRAP_FAILED = (
    p11.GeneralError,
    p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange,
    p11.WrappedKeyInvalid,
    p11.WrappedKeyLenRange,
    p11.DataInvalid,
    p11.DataLenRange,
)
_NOT_SUPPORTED = (p11.MechanismInvalid, p11.MechanismParamInvalid, p11.ArgumentsBad)

Unwrap = Callable[[dict[Attribute, Any]], Any]

# A throwaway key and KEK for the RFC 5649 probe: session objects, readable on purpose.
_PROBE_PLAIN = {
    Attribute.TOKEN: False,
    Attribute.SENSITIVE: False,
    Attribute.EXTRACTABLE: True,
}


def rfc5649_mechanism(
    session: pkcs11.Session, mechanisms: frozenset[Mechanism]
) -> Mechanism | None:
    """The mechanism that unwraps RFC 5649 (AES key wrap with padding) in this token, or None:
    CKM_AES_KEY_WRAP_KWP when listed, else CKM_AES_KEY_WRAP_PAD if it unwraps a known RFC 5649
    vector (SoftHSM2's does; a conforming token's is another format)."""
    if Mechanism.AES_KEY_WRAP_KWP in mechanisms:
        return Mechanism.AES_KEY_WRAP_KWP
    if Mechanism.AES_KEY_WRAP_PAD in mechanisms and _unwraps_rfc5649(
        session, Mechanism.AES_KEY_WRAP_PAD
    ):
        return Mechanism.AES_KEY_WRAP_PAD
    return None


def _unwraps_rfc5649(session: pkcs11.Session, mechanism: Mechanism) -> bool:
    kek_value, key_value = os.urandom(32), os.urandom(IMPORTED_KEY_BYTES)
    wrapped = aes_key_wrap_with_padding(kek_value, key_value)
    made: list[Any] = []
    try:
        kek: Any = session.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: KeyType.AES,
                Attribute.VALUE: kek_value,
                Attribute.UNWRAP: True,
                **_PROBE_PLAIN,
            }
        )
        made.append(kek)
        key = kek.unwrap_key(
            ObjectClass.SECRET_KEY, KeyType.AES, wrapped, mechanism=mechanism,
            template=_PROBE_PLAIN,
        )  # fmt: skip
        made.append(key)
        return bytes(key[Attribute.VALUE]) == key_value
    except p11.PKCS11Error:
        return False
    finally:
        for obj in made:
            with contextlib.suppress(p11.PKCS11Error):
                obj.destroy()


def generate_wrapping_pair(
    session: pkcs11.Session, *, key_id: bytes, label: str, bits: int
) -> bytes:
    """A token RSA key pair whose private half can only unwrap; its public key as DER SPKI."""
    public, _private = session.generate_keypair(
        KeyType.RSA,
        bits,
        id=key_id,
        label=label,
        store=True,
        public_template=_WRAPPING_PUBLIC,
        private_template=_WRAPPING_PRIVATE,
    )
    numbers = rsa.RSAPublicNumbers(
        int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
        int.from_bytes(public[Attribute.MODULUS], "big"),
    )
    return numbers.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def destroy_wrapping_pair(session: pkcs11.Session, key_id: bytes) -> None:
    found = False
    for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
        for obj in list(session.get_objects({Attribute.CLASS: object_class, Attribute.ID: key_id})):
            if obj[Attribute.KEY_TYPE] == KeyType.RSA:
                obj.destroy()
                found = True
    if not found:
        raise RootKeyNotFound("no wrapping key with this handle")


def unwrap_root_key(
    session: pkcs11.Session,
    *,
    wrapping_id: bytes,
    algorithm: str,
    wrapped: bytes,
    new_id: bytes,
    label: str,
    template: dict[Attribute, Any],
    rfc5649: Mechanism | None,
) -> Any:
    """Unwrap `wrapped` into a new token AES key with `template`; return the key object.
    `rfc5649` is the token's RFC 5649 mechanism (`rfc5649_mechanism`).

    Raises an `ImportRejected` subclass and then leaves no object behind.
    """
    try:
        private: Any = session.get_key(
            object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.RSA, id=wrapping_id
        )
    except p11.NoSuchKey:
        raise RootKeyNotFound("no wrapping key with this handle") from None
    rsa_part, kwp_part = split_wrapped(algorithm, wrapped, len(private[Attribute.MODULUS]))
    if oaep_hash_of(algorithm) == "SHA256":
        oaep = (Mechanism.SHA256, MGF.SHA256, None)
    else:
        oaep = (Mechanism.SHA_1, MGF.SHA1, None)

    def rsa_unwrap(template: dict[Attribute, Any]) -> Any:
        try:
            return private.unwrap_key(
                ObjectClass.SECRET_KEY,
                KeyType.AES,
                rsa_part,
                mechanism=Mechanism.RSA_PKCS_OAEP,
                mechanism_param=oaep,
                template=template,
            )
        except _NOT_SUPPORTED:
            raise CapabilityNotSupported(f"this token cannot unwrap {algorithm}") from None
        except _UNWRAP_FAILED:
            raise WrappingKeyMismatch("the RSA-OAEP step failed") from None

    if not kwp_part:
        return _create_checked(session, rsa_unwrap, new_id, label, template)
    if rfc5649 is None:
        raise CapabilityNotSupported(f"this token cannot unwrap {algorithm} (no RFC 5649)")
    ephemeral = rsa_unwrap(_EPHEMERAL)
    try:

        def kwp_unwrap(template: dict[Attribute, Any]) -> Any:
            try:
                return ephemeral.unwrap_key(
                    ObjectClass.SECRET_KEY,
                    KeyType.AES,
                    kwp_part,
                    mechanism=rfc5649,
                    template=template,
                )
            except _NOT_SUPPORTED:
                raise CapabilityNotSupported(f"this token cannot unwrap {algorithm}") from None
            except _UNWRAP_FAILED:
                raise ImportedMaterialTampered("the AES key-wrap step failed") from None

        return _create_checked(session, kwp_unwrap, new_id, label, template)
    finally:
        with contextlib.suppress(p11.PKCS11Error):
            ephemeral.destroy()


def _create_checked(
    session: pkcs11.Session,
    unwrap: Unwrap,
    new_id: bytes,
    label: str,
    template: dict[Attribute, Any],
) -> Any:
    """Unwrap into the final object, then make sure it holds exactly an AES-256 key."""
    # ID and LABEL first: SoftHSM2 applies the template in order and refuses (AttributeReadOnly)
    # anything set after CKA_MODIFIABLE=false.
    key = unwrap({Attribute.ID: new_id, Attribute.LABEL: label, **template})
    try:
        length = _value_length(key) or _measured_length(session, unwrap)
        if length != IMPORTED_KEY_BYTES:
            raise ImportedKeyLengthInvalid(
                f"the material is {length} bytes; an AES-256 key is {IMPORTED_KEY_BYTES}"
            )
        # SoftHSM2 also pads CKM_AES_KEY_WRAP input to 8 bytes, so 25 to 31 bytes measure as 32;
        # no such AES key exists, and the token refuses to encrypt with one.
        try:
            key.encrypt(bytes(16), mechanism=Mechanism.AES_ECB)
        except (p11.MechanismInvalid, p11.KeySizeRange, p11.KeyTypeInconsistent):
            raise ImportedKeyLengthInvalid(
                f"the material is not an AES key of {IMPORTED_KEY_BYTES} bytes"
            ) from None
    except BaseException:
        with contextlib.suppress(p11.PKCS11Error):
            key.destroy()
        raise
    return key


def _value_length(key: Any) -> int:
    try:
        return int(key[Attribute.VALUE_LEN] or 0)
    except (p11.AttributeTypeInvalid, p11.AttributeSensitive):
        return 0


def _measured_length(session: pkcs11.Session, unwrap: Unwrap) -> int:
    """The material's length in bytes, measured as the module docstring explains (0 when it
    is not a multiple of 8, as every AES key length is)."""
    copy = unwrap(_PROBE_COPY)
    kek: Any = None
    try:
        kek = session.generate_key(KeyType.AES, 256, store=False, template=_PROBE_KEK)
        try:
            wrapped = kek.wrap_key(copy, mechanism=Mechanism.AES_KEY_WRAP)
        except (p11.KeySizeRange, p11.DataLenRange, p11.KeyNotWrappable, p11.GeneralError):
            return 0
        return len(wrapped) - 8
    finally:
        for obj in (copy, kek):
            if obj is not None:
                with contextlib.suppress(p11.PKCS11Error):
                    obj.destroy()


def key_check(key: Any) -> KeyCheck:
    return key_check_of(lambda blocks: bytes(key.encrypt(blocks, mechanism=Mechanism.AES_ECB)))
