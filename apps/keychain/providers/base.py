"""The L1 root-key provider interface: where customer root keys live and are used.

A provider holds AES-256 root keys that never leave it and encrypts/decrypts small payloads
(wrapped L2 keys) with them under AES-256-GCM. Callers name a key by an opaque handle string
returned by `create_root_key`; the provider decides what it means (the CKA_ID for PKCS#11).

Every ciphertext blob is ``nonce (12 bytes) || ciphertext || tag (16 bytes)``, the nonce a fresh
random 96-bit value from `os.urandom` per encryption.
"""

from __future__ import annotations

import abc
import os
import re

# Capabilities a provider may announce through `supports()`. Import algorithms follow the
# pattern "import:<ALGORITHM>" (e.g. "import:RSAES_OAEP_SHA_1"); unknown names are unsupported.
CAP_GENERATE = "generate"
CAP_DESTROY = "destroy"
CAP_AES_GCM = "aes_gcm"

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
