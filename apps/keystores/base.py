"""The keystore interface: everything that holds an L1 root key, behind one set of methods.

A keystore holds AES-256 keys that never leave it and encrypts/decrypts small payloads (wrapped
L2 keys) with them under AES-256-GCM with associated data. Implementations: the platform's HSM
over PKCS#11 (`pkcs11.keystore`), a development-only software store (`software`), and a
customer's own key manager (HYOK) over KMIP (`kmip`) or PKCS#11 (`pkcs11.external`). What a
keystore can do beyond wrapping is asked with `supports()`; capabilities of a PKCS#11 token come
from its mechanism list.

Callers name a key by an opaque reference: the handle `create_root_key` returned (the hex CKA_ID
in the HSM), or the customer's key id in their own key manager. Every ciphertext blob is
``nonce (12 bytes) || ciphertext || tag (16 bytes)``, the nonce a fresh random 96-bit value.
This layer knows nothing of tenants or of the key chain's models.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from apps.core import metrics

# Capabilities a keystore may announce through `supports()`. Import algorithms follow the
# pattern "import:<ALGORITHM>" (e.g. "import:RSAES_OAEP_SHA_1"); unknown names are unsupported.
CAP_WRAP = "wrap"  # AES-256-GCM encrypt/decrypt with associated data
CAP_CREATE = "create"  # generate a new AES-256 key inside the keystore
CAP_DESTROY = "destroy"
# ECDSA P-256 signing keys whose private half stays in the keystore (audit checkpoints).
CAP_SIGN = "sign"
CAP_SYNC = "sync"  # report a key's state (`describe`): a customer's key manager
CAPABILITIES = (CAP_WRAP, CAP_CREATE, CAP_DESTROY, CAP_SIGN, CAP_SYNC)

NONCE_BYTES = 12
TAG_BYTES = 16
KEY_ID_BYTES = 16

_HANDLE = re.compile(rf"[0-9a-f]{{{KEY_ID_BYTES * 2}}}")


class KeystoreError(Exception):
    """A keystore failed; `code` is stable and names the failure only.

    Messages never contain key material, plaintext or credentials.
    """

    code = "keystore_error"


class RootKeyNotFound(KeystoreError):
    """The keystore has no key with this reference (never created, destroyed, or gone from a
    customer's key manager)."""

    code = "root_key_not_found"


class RootKeyDestroyed(RootKeyNotFound):
    """The keystore says explicitly that the key was destroyed (a KMIP state), which is final;
    a plain "not found" may be a mistake of the moment (a wrong partition, a restore)."""

    code = "root_key_destroyed"


class RootKeyIntegrityError(KeystoreError):
    """A ciphertext failed authentication: wrong key, wrong associated data, or tampered."""

    code = "ciphertext_invalid"


class KeystoreUnavailable(KeystoreError):
    """The keystore cannot serve now: library, token, login or network failure, a timeout."""

    code = "keystore_unavailable"


class CircuitOpen(KeystoreUnavailable):
    """Not called at all: the keystore failed repeatedly (see `breaker.CircuitBreaker`)."""

    code = "circuit_open"


class KeystoreRefused(KeystoreError):
    """The keystore answered and refused: key revoked or deactivated, permission withdrawn,
    usage not allowed, login refused."""

    code = "keystore_refused"


class KeystoreConfigError(KeystoreError):
    """The keystore's settings or credentials cannot work (bad PEM, missing field)."""

    code = "keystore_config"


class CapabilityNotSupported(KeystoreError):
    """The keystore does not offer the requested operation (see `Keystore.supports`)."""

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
    """The capability a keystore announces when it can import material wrapped by `algorithm`."""
    return f"import:{algorithm}"


class ImportRejected(KeystoreError):
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


# Blocks a key check encrypts with AES-ECB: the zero block gives the classic key check value
# (its first three bytes, as PKCS#11's CKA_CHECK_VALUE); the two fixed blocks give a
# fingerprint that tells one material from another without revealing it.
KEY_CHECK_BLOCKS = bytes(16) + b"kcm-fingerprint\x01" + b"kcm-fingerprint\x02"
# The CMAC-based check value: the first bytes of AES-CMAC(key, one zero block), as newer
# standards (ANSI X9.24-1:2017) define it. The classic one is the first bytes of
# AES-ECB(key, zero block), which is also AES-GCM's hash key H for that key.
KCV_CMAC_BYTES = 5


@dataclass(frozen=True)
class KeyCheck:
    """What identifies a root key's material: `kcv` (classic) and `kcv_cmac` for people,
    `fingerprint` for KCM."""

    kcv: str
    kcv_cmac: str
    fingerprint: str


def key_check_of(encrypt_ecb: Callable[[bytes], bytes]) -> KeyCheck:
    """The KeyCheck of a key, given AES-ECB encryption under it (in its keystore).

    AES-CMAC of one complete block M is E(M xor K1), K1 the doubled E(zero block) (RFC 4493);
    for the zero block that is E(K1): one more ECB block, computed where the key is."""
    encrypted = bytes(encrypt_ecb(KEY_CHECK_BLOCKS))
    if len(encrypted) != len(KEY_CHECK_BLOCKS):
        raise KeystoreError("key check: unexpected output length")
    cmac = bytes(encrypt_ecb(_cmac_subkey(encrypted[:16])))
    return KeyCheck(
        kcv=encrypted[:3].hex(),
        kcv_cmac=cmac[:KCV_CMAC_BYTES].hex(),
        fingerprint=hashlib.sha256(b"kcm:material-fingerprint:v1" + encrypted[16:]).hexdigest(),
    )


def _cmac_subkey(encrypted_zero: bytes) -> bytes:
    """RFC 4493's K1: the block doubled in GF(2^128)."""
    value = int.from_bytes(encrypted_zero, "big") << 1
    if value >> 128:
        value = (value & ((1 << 128) - 1)) ^ 0x87
    return value.to_bytes(16, "big")


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


F = TypeVar("F", bound=Callable[..., Any])


def measured(operation: str) -> Callable[[F], F]:
    """Record a keystore method's latency and, when it fails, its error code, by the keystore's
    `name` (pkcs11, software, kmip, external-pkcs11) and `operation`: never its arguments."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def call(self: Keystore, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:
                code = exc.code if isinstance(exc, KeystoreError) else "unexpected"
                metrics.KEYSTORE_CALL_ERRORS.labels(self.name, operation, code).inc()
                raise
            finally:
                seconds = time.perf_counter() - started
                metrics.KEYSTORE_CALL_SECONDS.labels(self.name, operation).observe(seconds)

        return call  # type: ignore[return-value]

    return decorate


@dataclass(frozen=True)
class KeyInfo:
    """What a keystore says about one of its keys (`Keystore.describe`)."""

    algorithm: str  # "AES" or what the keystore calls it
    bits: int
    usable: bool  # active and allowed to encrypt and decrypt
    detail: str = ""


class Keystore(abc.ABC):
    """A holder of non-extractable AES-256 root keys that encrypts and decrypts with them.

    Implementations are thread-safe. Every method may raise `KeystoreUnavailable`; a method
    whose capability the keystore lacks raises `CapabilityNotSupported`.
    """

    name: str
    capabilities: frozenset[str] = frozenset()

    def supports(self, capability: str) -> bool:
        """Whether this keystore offers `capability` (a ``CAP_*`` constant or ``import:<alg>``)."""
        return capability in self.capabilities

    def require(self, *capabilities: str) -> None:
        """Raise `CapabilityNotSupported` naming every one of `capabilities` it lacks."""
        missing = [cap for cap in capabilities if not self.supports(cap)]
        if missing:
            raise CapabilityNotSupported(
                f"the {self.name} keystore lacks {', '.join(missing)}{self.missing_detail()}"
            )

    def missing_detail(self) -> str:
        """Why capabilities are missing, for `require`'s message (e.g. the mechanisms)."""
        return ""

    # Wrapping: every keystore.

    @abc.abstractmethod
    def encrypt(self, ref: str, plaintext: bytes, aad: bytes) -> bytes:
        """AES-256-GCM encrypt under the key; return ``nonce || ciphertext || tag``.

        `aad` binds the ciphertext to where it belongs; `decrypt` must be given the same bytes.
        Raises `RootKeyNotFound`, `KeystoreRefused` or `KeystoreUnavailable`.
        """

    @abc.abstractmethod
    def decrypt(self, ref: str, blob: bytes, aad: bytes) -> bytes:
        """Authenticate and decrypt a blob made by `encrypt` with the same key and `aad`.

        Raises `RootKeyIntegrityError` if the blob is malformed, tampered, made under another
        key or bound to other associated data; `RootKeyNotFound`; `KeystoreRefused`;
        `KeystoreUnavailable`.
        """

    @abc.abstractmethod
    def health(self) -> dict[str, object]:
        """Probe the keystore without raising.

        Returns ``{"ok": True, "keystore": name, ...}`` or ``{"ok": False, "keystore": name,
        "error": message}``; not ok when a capability the platform requires is missing.
        """

    def close(self) -> None:  # noqa: B027 (most keystores hold nothing to close)
        """Release connections (the keystore may be used again: it reconnects)."""

    def abandon(self) -> None:  # noqa: B027
        """In a forked child: forget connections without closing them (the parent still uses
        the same sockets)."""

    # Key lifecycle: keystores KCM creates keys in (CAP_CREATE, CAP_DESTROY).

    def create_root_key(self, *, label: str) -> str:
        """Generate a new AES-256 key inside the keystore and return its reference.

        `label` is a human-readable name stored with the key (not secret, not unique).
        """
        raise CapabilityNotSupported(f"{self.name} cannot create keys")

    def destroy(self, ref: str) -> None:
        """Irrecoverably delete the key. Raises `RootKeyNotFound` if it does not exist."""
        raise CapabilityNotSupported(f"{self.name} cannot destroy keys")

    def exists(self, ref: str) -> bool:
        """Whether a key with this reference exists now."""
        raise CapabilityNotSupported(f"{self.name} cannot list keys")

    # State sync: customer key managers (CAP_SYNC).

    def describe(self, ref: str) -> KeyInfo:
        """The key's algorithm, size and usability. Raises `RootKeyNotFound` if it does not
        exist, `KeystoreRefused` or `KeystoreUnavailable`."""
        raise CapabilityNotSupported(f"{self.name} cannot describe keys")

    # Signing (CAP_SIGN).

    def create_signing_key(self, *, label: str) -> str:
        """Generate an ECDSA P-256 key pair; the private key never leaves the keystore."""
        raise CapabilityNotSupported(f"{self.name} cannot sign")

    def sign(self, ref: str, data: bytes) -> bytes:
        """ECDSA-P256-SHA256 signature of `data`, DER-encoded (verifiable offline)."""
        raise CapabilityNotSupported(f"{self.name} cannot sign")

    def public_key_der(self, ref: str) -> bytes:
        """The signing key's public half as DER SubjectPublicKeyInfo."""
        raise CapabilityNotSupported(f"{self.name} cannot sign")

    # BYOK: import of customer key material, unwrapped inside the keystore (import:<alg>).

    def create_wrapping_key(self, *, label: str, bits: int) -> tuple[str, bytes]:
        """Generate an RSA key pair (`bits` in WRAPPING_KEY_BITS) whose private half can only
        unwrap; return its reference and the public key as DER SubjectPublicKeyInfo."""
        raise CapabilityNotSupported(f"{self.name} cannot import key material")

    def destroy_wrapping_key(self, ref: str) -> None:
        """Delete a wrapping key pair. Raises `RootKeyNotFound` if it does not exist."""
        raise CapabilityNotSupported(f"{self.name} cannot import key material")

    def import_root_key(
        self, *, wrapping_handle: str, algorithm: str, wrapped: bytes, label: str
    ) -> str:
        """Unwrap customer material (`algorithm` in WRAPPING_ALGORITHMS) with the wrapping key,
        inside the keystore, into a new non-extractable AES-256 key; return its reference.

        Raises an `ImportRejected` subclass (nothing is left behind), `CapabilityNotSupported`
        when `supports(import_capability(algorithm))` is false, `RootKeyNotFound` for an
        unknown wrapping key, or `KeystoreUnavailable`.
        """
        raise CapabilityNotSupported(f"{self.name} cannot import key material")

    def key_check(self, ref: str) -> KeyCheck:
        """The key's check value and fingerprint (see KEY_CHECK_BLOCKS)."""
        raise CapabilityNotSupported(f"{self.name} cannot compute key check values")
