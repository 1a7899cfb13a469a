"""The KCM message format, version 1 (docs/message-format.md): pure functions, no network.

A message is a header (which names the service key, carries the L4 envelope of its data key
and the encryption context, and ends in a tag) followed by AES-256-GCM frames. Each frame's
associated data binds the header's hash, the frame's index and whether it is the final one,
so changed, reordered, dropped or borrowed frames all fail authentication.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import errors

MAGIC = b"KCMF"
FORMAT_VERSION = 1
ALG_AES256GCM_HKDF_SHA256 = 1
DEFAULT_FRAME_SIZE = 64 * 1024
MAX_FRAME_SIZE = 16 * 1024 * 1024
MAX_FRAMES = 2**32  # frame indexes fit the low 32 bits of the nonce's counter
MAX_ENVELOPE = 1024
MAX_CONTEXT = 4096
TAG = 16
HEADER_TAG = 16
_FIXED = struct.Struct(">4sBHI32s12s")  # magic, version, algorithm, frame size, id, nonce base
REGULAR, FINAL = 0, 1
_KDF_INFO = b"KCM message v1"


def canonical_context(context: Mapping[str, str] | None) -> bytes:
    """The encryption context's canonical JSON (docs/envelope.md, "Encryption context")."""
    if not context:
        return b"{}"
    context = dict(context)
    for name, value in context.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise errors.InvalidContext("context names and values must be strings")
    encoded = json.dumps(
        context, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()
    if len(encoded) > MAX_CONTEXT:
        raise errors.InvalidContext(f"context is over {MAX_CONTEXT} bytes")
    return encoded


@dataclass(frozen=True)
class Header:
    """A message's header as read, before (or after) its tag is checked."""

    version: int
    algorithm: int
    frame_size: int
    message_id: bytes
    nonce_base: bytes
    service_key: str
    envelope: bytes
    context_json: bytes
    tag: bytes
    raw: bytes  # every byte of the header, tag included

    @property
    def context(self) -> dict[str, str]:
        loaded: dict[str, str] = json.loads(self.context_json)
        return loaded

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(self.raw).digest()

    @property
    def body(self) -> bytes:
        return self.raw[:-HEADER_TAG]


@dataclass(frozen=True)
class Keys:
    encryption: bytes
    header_mac: bytes


def derive_keys(data_key: bytes, message_id: bytes) -> Keys:
    """The message's own keys, HKDF-SHA256 (RFC 5869) of the data key salted with the message
    id: a cached data key never meets the same nonce twice. Written out with one-shot HMACs,
    which costs a few microseconds rather than tens per message."""
    prk = hmac.digest(message_id, data_key, "sha256")
    first = hmac.digest(prk, _KDF_INFO + b"\x01", "sha256")
    second = hmac.digest(prk, first + _KDF_INFO + b"\x02", "sha256")
    return Keys(first, second)


def header_encode(
    *,
    keys: Keys,
    frame_size: int,
    message_id: bytes,
    nonce_base: bytes,
    service_key: str,
    envelope: bytes,
    context_json: bytes,
) -> bytes:
    if not 1 <= frame_size <= MAX_FRAME_SIZE:
        raise ValueError(f"frame size must be 1..{MAX_FRAME_SIZE}")
    name = service_key.encode()
    if not 1 <= len(name) <= 255 or len(envelope) > MAX_ENVELOPE:
        raise ValueError("service key name or envelope out of range")
    body = b"".join(
        (
            _FIXED.pack(
                MAGIC, FORMAT_VERSION, ALG_AES256GCM_HKDF_SHA256, frame_size, message_id, nonce_base
            ),
            bytes([len(name)]),
            name,
            struct.pack(">H", len(envelope)),
            envelope,
            struct.pack(">H", len(context_json)),
            context_json,
        )
    )
    return body + hmac.digest(keys.header_mac, body, "sha256")[:HEADER_TAG]


class _Reader:
    """Reads exact byte counts from a stream; a short read is a truncated message."""

    def __init__(self, read: object) -> None:
        self._read = read
        self.taken = bytearray()

    def take(self, count: int, what: str, *, keep: bool = True) -> bytes:
        chunks: list[bytes] = []
        wanted = count
        while wanted:
            chunk = self._read(wanted)  # type: ignore[operator]
            if not chunk:
                break
            chunks.append(chunk)
            wanted -= len(chunk)
        data = b"".join(chunks)
        if len(data) != count:
            raise errors.MessageTruncated(f"the message ends inside its {what}")
        if keep:
            self.taken += data
        return data


def header_read(read: object) -> Header:
    """Parse a header from `read` (a file's read method) without checking its tag."""
    reader = _Reader(read)
    magic = reader.take(4, "header")
    if magic != MAGIC:
        raise errors.MessageMalformed("not a KCM message (bad magic)")
    fixed = magic + reader.take(_FIXED.size - 4, "header")
    _, version, algorithm, frame_size, message_id, nonce_base = _FIXED.unpack(fixed)
    if version != FORMAT_VERSION:
        raise errors.UnsupportedFormat(f"message format {version} is not supported")
    if algorithm != ALG_AES256GCM_HKDF_SHA256:
        raise errors.UnsupportedAlgorithm(f"algorithm {algorithm} is not supported")
    if not 1 <= frame_size <= MAX_FRAME_SIZE:
        raise errors.MessageMalformed("frame size out of range")
    name_len = reader.take(1, "header")[0]
    if name_len == 0:
        raise errors.MessageMalformed("empty service key name")
    try:
        service_key = reader.take(name_len, "header").decode()
    except UnicodeDecodeError:
        raise errors.MessageMalformed("service key name is not UTF-8") from None
    (env_len,) = struct.unpack(">H", reader.take(2, "header"))
    if env_len > MAX_ENVELOPE:
        raise errors.MessageMalformed("envelope too long")
    envelope = reader.take(env_len, "header")
    (ctx_len,) = struct.unpack(">H", reader.take(2, "header"))
    if ctx_len > MAX_CONTEXT:
        raise errors.MessageMalformed("context too long")
    context_json = reader.take(ctx_len, "header")
    try:
        parsed = json.loads(context_json)
        if not isinstance(parsed, dict) or canonical_context(parsed) != context_json:
            raise ValueError
    except (ValueError, errors.InvalidContext):
        raise errors.MessageMalformed("the header's context is not canonical JSON") from None
    tag = reader.take(HEADER_TAG, "header")
    return Header(
        version, algorithm, frame_size, message_id, nonce_base, service_key, envelope,
        context_json, tag, bytes(reader.taken),
    )  # fmt: skip


def header_verify(header: Header, keys: Keys) -> None:
    expected = hmac.digest(keys.header_mac, header.body, "sha256")[:HEADER_TAG]
    if not hmac.compare_digest(expected, header.tag):
        raise errors.HeaderInvalid("the message header was changed")


def _nonce(base: bytes, index: int) -> bytes:
    counter = int.from_bytes(base, "big") ^ index
    return counter.to_bytes(12, "big")


def _aad(header_hash: bytes, index: int, flag: int) -> bytes:
    return header_hash + struct.pack(">QB", index, flag)


class FrameSealer:
    """Seals a message's frames in order; `final()` must be called exactly once, last."""

    def __init__(self, header: bytes, keys: Keys, nonce_base: bytes, frame_size: int) -> None:
        self._aead = AESGCM(keys.encryption)
        self._hash = hashlib.sha256(header).digest()
        self._base = nonce_base
        self.frame_size = frame_size
        self.index = 0

    def _seal(self, plaintext: bytes, flag: int) -> bytes:
        if self.index >= MAX_FRAMES:
            raise ValueError("message too long for its frame size")
        sealed = self._aead.encrypt(
            _nonce(self._base, self.index), plaintext, _aad(self._hash, self.index, flag)
        )
        self.index += 1
        return sealed

    def regular(self, plaintext: bytes) -> bytes:
        assert len(plaintext) == self.frame_size
        return bytes([REGULAR]) + self._seal(plaintext, REGULAR)

    def final(self, plaintext: bytes) -> bytes:
        assert len(plaintext) <= self.frame_size
        return bytes([FINAL]) + struct.pack(">I", len(plaintext)) + self._seal(plaintext, FINAL)


def frames_open(read: object, header: Header, keys: Keys) -> Iterator[tuple[bytes, bool]]:
    """Yield (plaintext, is_final) per frame, each after its tag verified. After the final
    frame, checks that nothing follows before yielding it."""
    reader = _Reader(read)
    aead = AESGCM(keys.encryption)
    header_hash = header.hash
    index = 0
    while True:
        flag = reader.take(1, "frames", keep=False)[0]
        if flag == REGULAR:
            size = header.frame_size
        elif flag == FINAL:
            (size,) = struct.unpack(">I", reader.take(4, "final frame", keep=False))
            if size > header.frame_size:
                raise errors.FrameInvalid(f"frame {index} is longer than the frame size")
        else:
            raise errors.FrameInvalid(f"frame {index} has an unknown type")
        sealed = reader.take(size + TAG, f"frame {index}", keep=False)
        try:
            plaintext = aead.decrypt(
                _nonce(header.nonce_base, index), sealed, _aad(header_hash, index, flag)
            )
        except InvalidTag:
            raise errors.FrameInvalid(
                f"frame {index} failed authentication (changed, moved or from another message)"
            ) from None
        if flag == FINAL:
            if read(1):  # type: ignore[operator]
                raise errors.TrailingData("bytes follow the final frame")
            yield plaintext, True
            return
        yield plaintext, False
        index += 1


def seal_all(sealer: FrameSealer, data: bytes) -> bytes:
    """Every frame of `data`: regular frames, then a final one of 1..frame_size bytes (0 only
    for empty data), as `Client.encrypt_stream` cuts them."""
    size = sealer.frame_size
    regular = max(0, (len(data) - 1) // size)
    view = memoryview(data)
    parts = [sealer.regular(bytes(view[i * size : (i + 1) * size])) for i in range(regular)]
    parts.append(sealer.final(bytes(view[regular * size :])))
    return b"".join(parts)


def open_with_key(data: bytes, data_key: bytes) -> bytes:
    """A whole message's plaintext given its data key (test vectors; no server involved)."""
    import io

    stream = io.BytesIO(data)
    header = header_read(stream.read)
    keys = derive_keys(data_key, header.message_id)
    header_verify(header, keys)
    return b"".join(part for part, _ in frames_open(stream.read, header, keys))
