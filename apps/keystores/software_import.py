"""BYOK for the software keystore: RSA wrapping keys and unwrapping with `cryptography`.

The same steps as the HSM performs (see pkcs11_import.py), in process memory: for development
and as the reference the HSM path is tested against.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap_with_padding

from apps.keystores.base import (
    IMPORTED_KEY_BYTES,
    WRAPPING_KEY_BITS,
    ImportedKeyLengthInvalid,
    ImportedMaterialTampered,
    KeyCheck,
    KeystoreError,
    WrappingKeyMismatch,
    key_check_of,
    oaep_hash_of,
    split_wrapped,
)


def new_wrapping_key(bits: int) -> tuple[bytes, bytes]:
    """A fresh RSA key pair: (private key as PKCS#8 PEM, public key as DER SPKI)."""
    if bits not in WRAPPING_KEY_BITS:
        raise KeystoreError(f"wrapping keys are {WRAPPING_KEY_BITS} bits, not {bits}")
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, der


def unwrap_material(private_pem: bytes, algorithm: str, wrapped: bytes) -> bytes:
    """The AES-256 key inside `wrapped`, or an `ImportRejected` saying what is wrong."""
    private = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    rsa_part, kwp_part = split_wrapped(algorithm, wrapped, private.key_size // 8)
    # SHA-1 here is OAEP's hash, as the clouds' RSAES_OAEP_SHA_1 names it: not a signature.
    digest: hashes.HashAlgorithm = (
        hashes.SHA256() if oaep_hash_of(algorithm) == "SHA256" else hashes.SHA1()  # noqa: S303
    )
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=digest), algorithm=digest, label=None)
    try:
        first = private.decrypt(rsa_part, oaep)
    except ValueError:
        raise WrappingKeyMismatch("the RSA-OAEP step failed") from None
    if not kwp_part:
        material = first
    else:
        if len(first) not in (16, 24, 32):
            raise WrappingKeyMismatch("the ephemeral AES key is not 128, 192 or 256 bits")
        try:
            material = aes_key_unwrap_with_padding(first, kwp_part)
        except InvalidUnwrap:
            raise ImportedMaterialTampered("the AES key-wrap step failed") from None
    if len(material) != IMPORTED_KEY_BYTES:
        raise ImportedKeyLengthInvalid(
            f"the material is {len(material)} bytes; an AES-256 key is {IMPORTED_KEY_BYTES}"
        )
    return material


def key_check(raw_key: bytes) -> KeyCheck:
    def encrypt_ecb(blocks: bytes) -> bytes:
        encryptor = Cipher(algorithms.AES(raw_key), modes.ECB()).encryptor()  # noqa: S305
        return encryptor.update(blocks) + encryptor.finalize()

    return key_check_of(encrypt_ecb)
