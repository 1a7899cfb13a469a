"""Wrap your AES-256 key for import into KCM (BYOK), on your side, with `cryptography`.

    python tools/byok_wrap.py --key key.bin --public-key wrapping-key.pem \\
        --algorithm RSA_AES_KEY_WRAP_SHA_256 --out wrapped.bin

`key.bin` holds the 32 raw bytes of your key; the public key (PEM or DER) and the algorithm
come from KCM's import parameters. The output is the wrapped material to upload (raw bytes, or
base64 with --base64, as the API's `wrapped_material` takes it). The key check value (the first
three bytes of AES-ECB of a zero block under your key) is printed, to compare with the one KCM
returns after the import. See docs/byok.md for the same with openssl.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

ALGORITHMS = (
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "RSA_AES_KEY_WRAP_SHA_1",
    "RSA_AES_KEY_WRAP_SHA_256",
)
KEY_BYTES = 32


def load_public_key(data: bytes) -> rsa.RSAPublicKey:
    key = (
        serialization.load_pem_public_key(data)
        if data.lstrip().startswith(b"-----")
        else serialization.load_der_public_key(data)
    )
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the wrapping key is not an RSA public key")
    return key


def wrap(material: bytes, public_key: rsa.RSAPublicKey, algorithm: str) -> bytes:
    """The wrapped material: RSA-OAEP of the key, or (RSA_AES_KEY_WRAP_*) RSA-OAEP of a fresh
    AES-256 key followed by the AES key wrap with padding (RFC 5649) of the key under it."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; one of {', '.join(ALGORITHMS)}")
    if len(material) != KEY_BYTES:
        raise ValueError(f"the key must be {KEY_BYTES} bytes (AES-256), not {len(material)}")
    digest: hashes.HashAlgorithm = (
        hashes.SHA256() if algorithm.endswith("SHA_256") else hashes.SHA1()  # noqa: S303
    )
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=digest), algorithm=digest, label=None)
    if algorithm.startswith("RSAES_OAEP"):
        return public_key.encrypt(material, oaep)
    ephemeral = os.urandom(32)
    return public_key.encrypt(ephemeral, oaep) + aes_key_wrap_with_padding(ephemeral, material)


def key_check_value(material: bytes) -> str:
    """The classic check value: AES-ECB(key, zero block), first 3 bytes."""
    encryptor = Cipher(algorithms.AES(material), modes.ECB()).encryptor()  # noqa: S305
    return (encryptor.update(bytes(16)) + encryptor.finalize())[:3].hex()


def key_check_value_cmac(material: bytes) -> str:
    """The CMAC check value: AES-CMAC(key, zero block), first 5 bytes."""
    mac = CMAC(algorithms.AES(material))
    mac.update(bytes(16))
    return mac.finalize()[:5].hex()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--key", required=True, type=Path, help="file with the 32-byte key")
    parser.add_argument("--public-key", required=True, type=Path, help="KCM's wrapping key")
    parser.add_argument("--algorithm", required=True, choices=ALGORITHMS)
    parser.add_argument("--out", required=True, type=Path, help="where to write the result")
    parser.add_argument("--base64", action="store_true", help="write base64 instead of bytes")
    args = parser.parse_args(argv)
    try:
        material = args.key.read_bytes()
        wrapped = wrap(material, load_public_key(args.public_key.read_bytes()), args.algorithm)
    except (OSError, ValueError) as exc:
        print(f"byok_wrap: {exc}", file=sys.stderr)
        return 2
    args.out.write_bytes(base64.b64encode(wrapped) + b"\n" if args.base64 else wrapped)
    print(f"key check value: {key_check_value(material)}", file=sys.stderr)
    print(f"CMAC check value: {key_check_value_cmac(material)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
