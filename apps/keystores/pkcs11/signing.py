"""ECDSA P-256 signing keys in a PKCS#11 token (audit checkpoints): the private key is
sensitive, non-extractable and may only sign."""

from __future__ import annotations

import hashlib
from typing import cast

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.util.ec import (
    encode_ec_public_key,
    encode_ecdsa_signature,
    encode_named_curve_parameters,
)

from apps.keystores.base import RootKeyNotFound

_PRIVATE = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.SIGN: True,
    Attribute.DECRYPT: False,
    Attribute.UNWRAP: False,
    Attribute.DERIVE: False,
}


def generate_pair(session: pkcs11.Session, *, key_id: bytes, label: str) -> None:
    params = session.create_domain_parameters(
        KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
    )
    params.generate_keypair(
        store=True,
        id=key_id,
        label=label,
        public_template={Attribute.VERIFY: True, Attribute.TOKEN: True},
        private_template=_PRIVATE,
    )


def sign(session: pkcs11.Session, key_id: bytes, data: bytes) -> bytes:
    try:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_id)
    except p11.NoSuchKey:
        raise RootKeyNotFound("no signing key with this handle") from None
    digest = hashlib.sha256(data).digest()
    raw = key.sign(digest, mechanism=Mechanism.ECDSA)  # type: ignore[attr-defined]
    return bytes(encode_ecdsa_signature(raw))


def public_key_der(session: pkcs11.Session, key_id: bytes) -> bytes:
    try:
        key = session.get_key(object_class=ObjectClass.PUBLIC_KEY, id=key_id)
    except p11.NoSuchKey:
        raise RootKeyNotFound("no signing key with this handle") from None
    return bytes(encode_ec_public_key(cast(pkcs11.PublicKey, key)))
