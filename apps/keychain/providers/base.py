"""The L1 root-key provider interface: where customer root keys live and are used.

A provider holds AES-256 root keys that never leave it and encrypts/decrypts small payloads
(wrapped L2 keys) with them under AES-256-GCM. Callers name a key by an opaque handle string
returned by `create_root_key`; the provider decides what it means (the CKA_ID for PKCS#11).

Every ciphertext blob is ``nonce (12 bytes) || ciphertext || tag (16 bytes)``, the nonce a fresh
random 96-bit value from `os.urandom` per encryption.
"""

from __future__ import annotations

import abc
import hashlib
import os
import re
from dataclasses import dataclass

# Capabilities a provider may announce through `supports()`. Import algorithms follow the
# pattern "import:<ALGORITHM>" (e.g. "import:RSAES_OAEP_SHA_1"); unknown names are unsupported.
CAP_GENERATE = "generate"
CAP_DESTROY = "destroy"
CAP_AES_GCM = "aes_gcm"
# ECDSA P-256 signing keys whose private half stays in the provider (audit checkpoints).
CAP_SIGN = "sign"

NONCE_BYTES = 12
TAG_BYTES = 16
KEY_ID_BYTES = 16

_HANDLE = re.compile(rf"[0-9a-f]{{{KEY_ID_BYTES * 2}}}")


class ProviderError(Exception):
    """A root-key provider failed; `code` is stable and safe to show to API clients.

    Messages never contain key material, plaintext or credentials.
    """

    code = "provider_error"


class RootKeyNotFound(ProviderError):
    """No root key with this handle exists (never created, or destroyed)."""

    code = "root_key_not_found"


class RootKeyIntegrityError(ProviderError):
    """A ciphertext failed authentication: wrong key, wrong associated data, or tampered."""

    code = "ciphertext_invalid"


class ProviderUnavailable(ProviderError):
    """The provider cannot serve now: library, token or login failure, or a lock timeout."""

    code = "hsm_unavailable"


class CapabilityNotSupported(ProviderError):
    """The provider does not offer the requested operation (see `RootKeyProvider.supports`)."""

    code = "capability_not_supported"


# BYOK: wrapping algorithms as the big clouds name them, and the RSA wrapping key sizes.
# RSA_AES_KEY_WRAP_* is the CKM_RSA_AES_KEY_WRAP scheme: RSA-OAEP of an ephemeral AES key,
# followed by AES key wrap with padding (RFC 5649) of the material under that key.
WRAPPING_ALGORITHMS = (
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "RSA_AES_KEY_WRAP_SHA_1",
    "RSA_AES_KEY_WRAP_SHA_256",
)
WRAPPING_KEY_BITS = (2048, 3072, 4096)
IMPORTED_KEY_BYTES = 32


def import_capability(algorithm: str) -> str:
    """The capability a provider announces when it can import material wrapped by `algorithm`."""
    return f"import:{algorithm}"


class ImportRejected(ProviderError):
    """Wrapped key material could not be imported; nothing was created."""

    code = "import_rejected"


class WrappingKeyMismatch(ImportRejected):
    """The RSA step failed: not wrapped with this wrapping key (or its RSA part was altered)."""

    code = "import_wrapping_key_mismatch"


class ImportedMaterialTampered(ImportRejected):
    """The AES key-wrap step failed its integrity check: the blob was altered."""

    code = "import_material_tampered"


class ImportBlobMalformed(ImportRejected):
    """The blob's size does not fit the algorithm and the wrapping key."""

    code = "import_blob_malformed"


class ImportedKeyLengthInvalid(ImportRejected):
    """The unwrapped material is not an AES-256 key (32 bytes)."""

    code = "import_key_length_invalid"


# Blocks a key check encrypts with AES-ECB: the zero block gives the customer-facing key check
# value (its first three bytes, as PKCS#11's CKA_CHECK_VALUE); the two fixed blocks give a
# fingerprint that tells one material from another without revealing it.
KEY_CHECK_BLOCKS = bytes(16) + b"kcm-fingerprint\x01" + b"kcm-fingerprint\x02"


@dataclass(frozen=True)
class KeyCheck:
    """What identifies a root key's material: `kcv` for people, `fingerprint` for KCM."""

    kcv: str
    fingerprint: str


def key_check_from_blocks(encrypted: bytes) -> KeyCheck:
    """The KeyCheck from AES-ECB(key, KEY_CHECK_BLOCKS)."""
    if len(encrypted) != len(KEY_CHECK_BLOCKS):
        raise ProviderError("key check: unexpected output length")
    return KeyCheck(
        kcv=encrypted[:3].hex(),
        fingerprint=hashlib.sha256(b"kcm:material-fingerprint:v1" + encrypted[16:]).hexdigest(),
    )


def oaep_hash_of(algorithm: str) -> str:
    """``"SHA1"`` or ``"SHA256"``: the OAEP (and MGF1) hash a wrapping algorithm uses."""
    return "SHA256" if algorithm.endswith("SHA_256") else "SHA1"


def split_wrapped(algorithm: str, wrapped: bytes, modulus_bytes: int) -> tuple[bytes, bytes]:
    """The RSA part and the AES key-wrap part (empty for RSAES_OAEP_*) of a wrapped blob.

    Sizes are checked here, before any HSM call: the RSA part is exactly one modulus long, and
    an AES key wrap of 32 bytes of material is 40 bytes (RFC 5649).
    """
    if algorithm.startswith("RSAES_OAEP"):
        if len(wrapped) != modulus_bytes:
            raise ImportBlobMalformed(
                f"an {algorithm} blob for this wrapping key is {modulus_bytes} bytes, "
                f"not {len(wrapped)}"
            )
        return wrapped, b""
    rsa_part, kwp_part = wrapped[:modulus_bytes], wrapped[modulus_bytes:]
    if len(rsa_part) != modulus_bytes or len(kwp_part) < 16 or len(kwp_part) % 8:
        raise ImportBlobMalformed(
            f"an {algorithm} blob is {modulus_bytes} bytes of RSA-OAEP followed by an AES key "
            "wrap (a multiple of 8 bytes, at least 16)"
        )
    if len(kwp_part) != IMPORTED_KEY_BYTES + 8:
        raise ImportedKeyLengthInvalid(
            f"the wrapped material is {len(kwp_part) - 8} bytes (padded); an AES-256 key is "
            f"{IMPORTED_KEY_BYTES}"
        )
    return rsa_part, kwp_part


def new_key_id() -> bytes:
    """A fresh random key identifier (16 bytes); its hex form is the handle."""
    return os.urandom(KEY_ID_BYTES)


def key_id_from_handle(handle: str) -> bytes:
    """The key identifier a handle names; a malformed handle names no key."""
    if not isinstance(handle, str) or not _HANDLE.fullmatch(handle):
        raise RootKeyNotFound("no root key with this handle")
    return bytes.fromhex(handle)


def split_blob(blob: bytes) -> tuple[bytes, bytes]:
    """Split ``nonce || ciphertext || tag`` into the nonce and ``ciphertext || tag``."""
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise RootKeyIntegrityError("ciphertext is too short")
    return blob[:NONCE_BYTES], blob[NONCE_BYTES:]


class RootKeyProvider(abc.ABC):
    """A store of non-extractable AES-256 root keys that encrypts and decrypts with them.

    Implementations are per-process objects (see `registry.get_provider`) and thread-safe.
    `calls` counts low-level crypto/key operations made by this object (HSM or software), so
    that benchmarks can prove which paths stay off the HSM; `reset_call_count` zeroes it.
    """

    name: str
    capabilities: frozenset[str] = frozenset()
    calls: int = 0

    def supports(self, capability: str) -> bool:
        """Whether this provider offers `capability` (a ``CAP_*`` constant or ``import:<alg>``)."""
        return capability in self.capabilities

    def reset_call_count(self) -> None:
        """Set `calls` back to zero."""
        self.calls = 0

    @abc.abstractmethod
    def create_root_key(self, *, label: str) -> str:
        """Generate a new AES-256 root key inside the provider and return its handle.

        `label` is a human-readable name stored with the key (not secret, not unique).
        """

    @abc.abstractmethod
    def encrypt(self, handle: str, plaintext: bytes, aad: bytes) -> bytes:
        """AES-256-GCM encrypt under the root key; return ``nonce || ciphertext || tag``.

        `aad` binds the ciphertext to where it belongs; `decrypt` must be given the same bytes.
        Raises `RootKeyNotFound` or `ProviderUnavailable`.
        """

    @abc.abstractmethod
    def decrypt(self, handle: str, blob: bytes, aad: bytes) -> bytes:
        """Authenticate and decrypt a blob made by `encrypt` with the same key and `aad`.

        Raises `RootKeyIntegrityError` if the blob is malformed, tampered, made under another
        key or bound to other associated data; `RootKeyNotFound`; `ProviderUnavailable`.
        """

    @abc.abstractmethod
    def destroy(self, handle: str) -> None:
        """Irrecoverably delete the root key. Raises `RootKeyNotFound` if it does not exist."""

    @abc.abstractmethod
    def exists(self, handle: str) -> bool:
        """Whether a root key with this handle exists now."""

    @abc.abstractmethod
    def health(self) -> dict[str, object]:
        """Probe the provider without raising.

        Returns ``{"ok": True, "provider": name, ...}`` or ``{"ok": False, "provider": name,
        "error": message}``.
        """

    def create_signing_key(self, *, label: str) -> str:
        """Generate an ECDSA P-256 key pair; the private key never leaves the provider."""
        raise CapabilityNotSupported(f"{self.name} cannot sign")

    def sign(self, handle: str, data: bytes) -> bytes:
        """ECDSA-P256-SHA256 signature of `data`, DER-encoded (verifiable offline)."""
        raise CapabilityNotSupported(f"{self.name} cannot sign")

    def public_key_der(self, handle: str) -> bytes:
        """The signing key's public half as DER SubjectPublicKeyInfo."""
        raise CapabilityNotSupported(f"{self.name} cannot sign")

    # BYOK: import of customer key material, unwrapped inside the provider.

    def create_wrapping_key(self, *, label: str, bits: int) -> tuple[str, bytes]:
        """Generate an RSA key pair (`bits` in WRAPPING_KEY_BITS) whose private half can only
        unwrap; return its handle and the public key as DER SubjectPublicKeyInfo."""
        raise CapabilityNotSupported(f"{self.name} cannot import key material")

    def destroy_wrapping_key(self, handle: str) -> None:
        """Delete a wrapping key pair. Raises `RootKeyNotFound` if it does not exist."""
        raise CapabilityNotSupported(f"{self.name} cannot import key material")

    def import_root_key(
        self, *, wrapping_handle: str, algorithm: str, wrapped: bytes, label: str
    ) -> str:
        """Unwrap customer material (`algorithm` in WRAPPING_ALGORITHMS) with the wrapping key,
        inside the provider, into a new non-extractable AES-256 root key; return its handle.

        Raises an `ImportRejected` subclass (nothing is left behind), `CapabilityNotSupported`
        when `supports(import_capability(algorithm))` is false, `RootKeyNotFound` for an
        unknown wrapping key, or `ProviderUnavailable`.
        """
        raise CapabilityNotSupported(f"{self.name} cannot import key material")

    def key_check(self, handle: str) -> KeyCheck:
        """The root key's check value and fingerprint (see KEY_CHECK_BLOCKS)."""
        raise CapabilityNotSupported(f"{self.name} cannot compute key check values")
