"""BYOK as the customer does it: their side in plain `cryptography` (an implementation
independent of KCM's), and a key admin and a key user of acme driving the BYOK API."""

from __future__ import annotations

import base64
import os
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from apps.core.roles import Role
from tests.helpers import Api

ALL = [
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "RSA_AES_KEY_WRAP_SHA_1",
    "RSA_AES_KEY_WRAP_SHA_256",
]
SOFTHSM = ["RSAES_OAEP_SHA_1", "RSA_AES_KEY_WRAP_SHA_1"]
CTX = {"invoice": "42"}


# --- the customer's side: plain `cryptography`, nothing from KCM ---------------------------


def customer_wrap(public_pem: str, algorithm: str, material: bytes) -> bytes:
    public = serialization.load_pem_public_key(public_pem.encode())
    assert isinstance(public, rsa.RSAPublicKey)
    digest = hashes.SHA256() if algorithm.endswith("256") else hashes.SHA1()
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=digest), algorithm=digest, label=None)
    if algorithm.startswith("RSAES_OAEP"):
        return public.encrypt(material, oaep)
    ephemeral = os.urandom(32)
    return public.encrypt(ephemeral, oaep) + aes_key_wrap_with_padding(ephemeral, material)


def customer_kcv(material: bytes) -> str:
    block = Cipher(algorithms.AES(material), modes.ECB()).encryptor().update(bytes(16))
    return block[:3].hex()


def customer_cmac_kcv(material: bytes) -> str:
    """The CMAC-based check value: AES-CMAC of a zero block, first 5 bytes."""
    mac = CMAC(algorithms.AES(material))
    mac.update(bytes(16))
    return mac.finalize()[:5].hex()


class Byok:
    """A key admin and a key user of acme, driving the BYOK API."""

    def __init__(self, api: Any) -> None:
        self.admin: Api = api("acme", Role.KEY_ADMIN)
        self.user: Api = api("acme", Role.KEY_USER)

    def create(self, name: str = "imported") -> dict[str, Any]:
        made = self.admin.post("/api/v1/customer-keys/byok/", {"name": name})
        assert made.status_code == 201, made.content
        return dict(made.json_body)

    def parameters(self, key_id: str, algorithm: str, bits: int = 2048) -> Any:
        return self.admin.post(
            f"/api/v1/keys/{key_id}/import-parameters/",
            {"algorithm": algorithm, "wrapping_key_bits": bits},
        )

    def import_(self, key_id: str, token: str, wrapped: bytes, **extra: Any) -> Any:
        body = {"import_token": token, "wrapped_material": base64.b64encode(wrapped).decode()}
        return self.admin.post(f"/api/v1/keys/{key_id}/import/", {**body, **extra})

    def import_material(
        self, key_id: str, material: bytes, algorithm: str = "RSAES_OAEP_SHA_1", **extra: Any
    ) -> Any:
        params = self.parameters(key_id, algorithm)
        assert params.status_code == 201, params.content
        wrapped = customer_wrap(params.json_body["public_key_pem"], algorithm, material)
        return self.import_(key_id, params.json_body["import_token"], wrapped, **extra)

    def service_key(self, key_id: str, name: str = "payments") -> None:
        made = self.admin.post("/api/v1/service-keys/", {"name": name, "customer_key_id": key_id})
        assert made.status_code == 201, made.content

    def data_key(self, name: str = "payments") -> Any:
        return self.user.post(f"/api/v1/service-keys/{name}/generate-data-key/", {"context": CTX})

    def decrypt(self, ciphertext: str, name: str = "payments") -> Any:
        return self.user.post(
            f"/api/v1/service-keys/{name}/decrypt-data-key/",
            {"ciphertext": ciphertext, "context": CTX},
        )

    def material(self, key_id: str) -> dict[str, Any]:
        return dict(self.admin.get(f"/api/v1/keys/{key_id}/material/").json_body)
