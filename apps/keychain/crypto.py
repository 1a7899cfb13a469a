"""Wrapping formats. See docs/envelope.md for the L4 envelope, with test vectors.

Every ciphertext is AES-256-GCM with a random 96-bit nonce and associated data that names
where it belongs (tenant, key, version, parent version), so a ciphertext moved anywhere else
fails to unwrap.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from apps.core.errors import KcmError

NONCE_BYTES = 12
KEY_BYTES = 32

MAGIC = b"KC"
FORMAT_VERSION = 1
KIND_DATA_KEY = 1
KIND_PAYLOAD = 2
_HEADER = struct.Struct(
    ">2sBB16s16sI16s"
)  # magic, format, kind, tenant, L3 id, L3 version, ctx check
HEADER_BYTES = _HEADER.size
MAX_CONTEXT_BYTES = 4096


class CiphertextMalformed(KcmError):
    code = "ciphertext_malformed"
    title = "The ciphertext is not a KCM envelope"


class CiphertextInvalid(KcmError):
    code = "ciphertext_invalid"
    title = "The ciphertext failed its integrity check (tampered, truncated or not ours)"


class ContextMismatch(KcmError):
    code = "context_mismatch"
    title = "The encryption context does not match the one the ciphertext was made with"


class InvalidContext(KcmError):
    code = "invalid_context"
    title = "The encryption context must be an object of string keys and string values"


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def new_nonce() -> bytes:
    """A fresh random GCM nonce. Every seal takes its nonce here and never from a caller (a nonce
    repeated under one key breaks GCM); the envelope vectors' generator and tests replace this
    function to reproduce a published envelope byte for byte."""
    return os.urandom(NONCE_BYTES)


def wrap_aad(
    level: str, *, tenant: uuid.UUID | str, key: uuid.UUID | str, version: int, parent: str
) -> bytes:
    """Associated data binding a wrapped L2/L3 to its tenant, key, version and parent version."""
    return f"kcm:{level}:v1|tenant={tenant}|key={key}|version={version}|parent={parent}".encode()


def seal(key: bytes | AESGCM, plaintext: bytes, aad: bytes) -> bytes:
    cipher = key if isinstance(key, AESGCM) else AESGCM(key)
    nonce = new_nonce()
    return nonce + cipher.encrypt(nonce, plaintext, aad)


def unseal(key: bytes | AESGCM, blob: bytes, aad: bytes) -> bytes:
    cipher = key if isinstance(key, AESGCM) else AESGCM(key)
    if len(blob) < NONCE_BYTES + 16:
        raise CiphertextInvalid()
    try:
        return cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise CiphertextInvalid() from None


def canonical_context(context: Any) -> bytes:
    """The encryption context as canonical JSON, exactly as docs/envelope.md specifies it:
    members sorted by code point, no whitespace, only `"`, `\\` and U+0000-U+001F escaped,
    UTF-8."""
    if context is None:
        context = {}
    if not isinstance(context, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in context.items()
    ):
        raise InvalidContext()
    text = json.dumps(context, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        encoded = text.encode()
    except UnicodeEncodeError:  # an unpaired surrogate: not Unicode text
        raise InvalidContext("The encryption context must be valid Unicode text.") from None
    if len(encoded) > MAX_CONTEXT_BYTES:
        raise InvalidContext(f"The encryption context is limited to {MAX_CONTEXT_BYTES} bytes.")
    return encoded


def context_key(l3_key: bytes) -> bytes:
    """A key for the context check, separate from the GCM key (HKDF-style expand, one block)."""
    return hmac.new(l3_key, b"kcm context check v1\x01", hashlib.sha256).digest()


def context_check(ctx_key: bytes, context: bytes) -> bytes:
    return hmac.new(ctx_key, context, hashlib.sha256).digest()[:16]


@dataclass(frozen=True)
class Envelope:
    kind: int
    tenant: uuid.UUID
    key_id: uuid.UUID
    version: int
    check: bytes
    header: bytes
    body: bytes  # nonce || ciphertext || tag


def envelope_parse(blob: bytes) -> Envelope:
    if len(blob) < HEADER_BYTES + NONCE_BYTES + 16:
        raise CiphertextMalformed("The ciphertext is too short to be a KCM envelope.")
    magic, fmt, kind, tenant, key_id, version, check = _HEADER.unpack_from(blob)
    if magic != MAGIC or fmt != FORMAT_VERSION or kind not in (KIND_DATA_KEY, KIND_PAYLOAD):
        raise CiphertextMalformed("Unknown envelope magic, format version or kind.")
    return Envelope(
        kind=kind,
        tenant=uuid.UUID(bytes=tenant),
        key_id=uuid.UUID(bytes=key_id),
        version=version,
        check=check,
        header=blob[:HEADER_BYTES],
        body=blob[HEADER_BYTES:],
    )


class ContextMemo:
    """Canonical form, check and envelope header of recently seen contexts, for one key version.

    Canonicalising and MACing the context is most of the per-item cost of a batch, and a batch
    (or a busy service) usually repeats a handful of contexts. Bounded; safe to share between
    threads (a lost race only computes twice)."""

    LIMIT = 1024

    def __init__(self, ctx_key: bytes, prefixes: dict[int, bytes]):
        self._ctx_key = ctx_key
        self._prefixes = prefixes  # envelope header up to the context check, by kind
        self._memo: dict[Any, tuple[bytes, bytes]] = {}
        self._headers: dict[Any, tuple[bytes, bytes]] = {}

    @staticmethod
    def _key(context: Any) -> Any:
        if context is None:
            return ()
        if not isinstance(context, dict):
            raise InvalidContext()
        try:
            key = tuple(sorted(context.items()))
            hash(key)
        except TypeError:  # unorderable or unhashable: not all strings
            raise InvalidContext() from None
        return key

    def get(self, context: Any) -> tuple[bytes, bytes]:
        """(canonical context, context check) of `context`; raises InvalidContext."""
        key = self._key(context)
        found = self._memo.get(key)
        if found is None:
            canonical = canonical_context(context)
            found = (canonical, context_check(self._ctx_key, canonical))
            if len(self._memo) >= self.LIMIT:
                self._memo.clear()
            self._memo[key] = found
        return found

    def sealing(self, kind: int, context: Any) -> tuple[bytes, bytes]:
        """(header, associated data) for sealing an envelope of `kind` under `context`."""
        key = (kind, self._key(context))
        found = self._headers.get(key)
        if found is None:
            canonical, check = self.get(context)
            header = self._prefixes[kind] + check
            found = (header, header + canonical)
            if len(self._headers) >= self.LIMIT:
                self._headers.clear()
            self._headers[key] = found
        return found


def envelope_prefix(*, kind: int, tenant: uuid.UUID, key_id: uuid.UUID, version: int) -> bytes:
    """The header up to the context check: the same for every envelope of a key version."""
    return _HEADER.pack(MAGIC, FORMAT_VERSION, kind, tenant.bytes, key_id.bytes, version, b"")[:-16]


def envelope_seal(*, cipher: AESGCM, header: bytes, aad: bytes, plaintext: bytes) -> bytes:
    """The envelope of `plaintext`, given its header and associated data (see ContextMemo)."""
    nonce = new_nonce()
    return header + nonce + cipher.encrypt(nonce, plaintext, aad)
