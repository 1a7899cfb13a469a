"""The KCM message format, version 2 (docs/message-format.md): pure functions, no network.

A message is a header (which names the service key, carries the L4 envelope of its data key
and the encryption context, and ends in a GMAC tag) followed by AES-256-GCM frames, all under
the data key itself with nonces from the header's random nonce base. Each frame's associated
data binds the whole header, the frame's index and whether it is the final one, so changed,
reordered, dropped or borrowed frames all fail authentication. Nothing is derived per message:
one `KeySealer` per (cached) data key serves every message, so a cached encrypt costs little
more than the AES-GCM of its data. Version 1 (HKDF per message, HMAC header tag) is still read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import errors

MAGIC = b"KCMF"
FORMAT_VERSION = 2
ALG_AES256GCM = 2  # frames and the header's GMAC tag under the data key itself
V1, ALG_V1_HKDF = 1, 1  # read only: HKDF-SHA256 message keys, HMAC-SHA256 header tag
DEFAULT_FRAME_SIZE = 64 * 1024
MAX_FRAME_SIZE = 16 * 1024 * 1024
MAX_FRAMES = 2**32  # frame indexes fit the low 32 bits of the nonce's counter
MAX_ENVELOPE = 1024
MAX_CONTEXT = 4096
TAG = 16
HEADER_TAG = 16
_FIXED = struct.Struct(">4sBHI32s12s")  # magic, version, algorithm, frame size, id, nonce base
_LENGTH = struct.Struct(">H")
_HEADER_NONCE = 1 << 95  # B XOR this: the header tag's nonce, outside every frame's B XOR i
REGULAR, FINAL = 0, 1
_SIZE = struct.Struct(">I")
_FINAL_BYTE = bytes([FINAL])
_FINAL_0 = struct.pack(">QB", 0, FINAL)  # frame 0's index and type, for one-frame messages
_KDF_INFO = b"KCM message v1"


_CONTEXT_MEMO: dict[tuple[tuple[str, str], ...], bytes] = {}


def canonical_context(context: Mapping[str, str] | None) -> bytes:
    """The encryption context's canonical JSON (docs/envelope.md, "Encryption context"),
    remembered for the last few hundred contexts so that a repeated one is not re-encoded."""
    if not context:
        return b"{}"
    try:
        memo_key = tuple(context.items())
        hit = _CONTEXT_MEMO.get(memo_key)
    except TypeError:  # an unhashable value: refused below
        memo_key, hit = (), None
    if hit is not None:
        return hit
    context = dict(context)
    for name, value in context.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise errors.InvalidContext("context names and values must be strings")
    encoded = json.dumps(
        context, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()
    if len(encoded) > MAX_CONTEXT:
        raise errors.InvalidContext(f"context is over {MAX_CONTEXT} bytes")
    if memo_key:
        if len(_CONTEXT_MEMO) >= 256:
            _CONTEXT_MEMO.clear()
        _CONTEXT_MEMO[memo_key] = encoded
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


def _v1_keys(data_key: bytes, message_id: bytes) -> tuple[bytes, bytes]:
    """Version 1's per-message (encryption, header MAC) keys: HKDF-SHA256 (RFC 5869) of the
    data key salted with the message id, written out with one-shot HMACs."""
    prk = hmac.digest(message_id, data_key, "sha256")
    first = hmac.digest(prk, _KDF_INFO + b"\x01", "sha256")
    second = hmac.digest(prk, first + _KDF_INFO + b"\x02", "sha256")
    return first, second


def header_tail(service_key: str, envelope: bytes, context_json: bytes) -> bytes:
    """The header's bytes after the fixed fields, the same for every message of a cached key."""
    name = service_key.encode()
    if not 1 <= len(name) <= 255 or len(envelope) > MAX_ENVELOPE:
        raise ValueError("service key name or envelope out of range")
    if len(context_json) > MAX_CONTEXT:
        raise errors.InvalidContext(f"context is over {MAX_CONTEXT} bytes")
    return b"".join(
        (bytes([len(name)]), name, _LENGTH.pack(len(envelope)), envelope,
         _LENGTH.pack(len(context_json)), context_json)
    )  # fmt: skip


def _header_nonce(nonce_base: bytes) -> bytes:
    return bytes([nonce_base[0] ^ 0x80]) + nonce_base[1:]  # B XOR 2^95


class MessageKey:
    """A data key ready to seal messages: its AES-GCM object and header tail, made once per
    data key (and kept with it in the cache) rather than once per message."""

    def __init__(
        self, data_key: bytes, *, service_key: str, envelope: bytes, context_json: bytes
    ) -> None:
        self.aead = AESGCM(data_key)
        self.tail = header_tail(service_key, envelope, context_json)

    def header(self, frame_size: int, message_id: bytes, nonce_base: bytes) -> bytes:
        if not 1 <= frame_size <= MAX_FRAME_SIZE:
            raise ValueError(f"frame size must be 1..{MAX_FRAME_SIZE}")
        body = (
            _FIXED.pack(MAGIC, FORMAT_VERSION, ALG_AES256GCM, frame_size, message_id, nonce_base)
            + self.tail
        )
        return body + self.aead.encrypt(_header_nonce(nonce_base), b"", body)

    def start(
        self, frame_size: int, message_id: bytes | None = None, nonce_base: bytes | None = None
    ) -> tuple[bytes, FrameSealer]:
        """A new message's header and its frame sealer (fresh random id and nonce base)."""
        if message_id is None or nonce_base is None:
            fresh = os.urandom(44)
            message_id, nonce_base = fresh[:32], fresh[32:]
        header = self.header(frame_size, message_id, nonce_base)
        return header, FrameSealer(self.aead, header, nonce_base, frame_size)

    def seal(self, data: bytes, frame_size: int) -> bytes:
        """A whole message of `data`. One that fits a frame (the common cached case) is sealed
        inline: two AES-GCM calls, one for the header tag and one for frame 0, and no more."""
        if len(data) > frame_size or not 1 <= frame_size <= MAX_FRAME_SIZE:
            header, sealer = self.start(frame_size)  # (which refuses a bad frame size)
            return header + seal_all(sealer, data)
        fresh = os.urandom(44)  # message id, nonce base B
        body = _FIXED.pack(MAGIC, FORMAT_VERSION, ALG_AES256GCM, frame_size, fresh[:32], fresh[32:])
        body += self.tail
        header = body + self.aead.encrypt(bytes((fresh[32] ^ 0x80,)) + fresh[33:], b"", body)
        sealed = self.aead.encrypt(fresh[32:], data, header + _FINAL_0)
        return b"".join((header, _FINAL_BYTE, _SIZE.pack(len(data)), sealed))


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
    if version not in (FORMAT_VERSION, V1):
        raise errors.UnsupportedFormat(f"message format {version} is not supported")
    if algorithm != (ALG_AES256GCM if version == FORMAT_VERSION else ALG_V1_HKDF):
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


def opener(header: Header, data_key: bytes) -> AESGCM:
    """The AES-GCM that opens `header`'s frames, once the header tag is checked with the key."""
    body = header.body
    if header.version == V1:
        encryption, header_mac = _v1_keys(data_key, header.message_id)
        expected = hmac.digest(header_mac, body, "sha256")[:HEADER_TAG]
        aead = AESGCM(encryption)
    else:
        aead = AESGCM(data_key)
        expected = aead.encrypt(_header_nonce(header.nonce_base), b"", body)
    if not hmac.compare_digest(expected, header.tag):
        raise errors.HeaderInvalid("the message header was changed")
    return aead


def _nonce(base: bytes, index: int) -> bytes:
    counter = int.from_bytes(base, "big") ^ index
    return counter.to_bytes(12, "big")


def _aad(header: bytes, index: int, flag: int) -> bytes:
    return header + struct.pack(">QB", index, flag)


class FrameSealer:
    """Seals a message's frames in order; `final()` must be called exactly once, last."""

    def __init__(self, aead: AESGCM, header: bytes, nonce_base: bytes, frame_size: int) -> None:
        self._aead = aead
        self._header = header
        self._base = nonce_base
        self.frame_size = frame_size
        self.index = 0

    def _seal(self, plaintext: bytes, flag: int) -> bytes:
        if self.index >= MAX_FRAMES:
            raise ValueError("message too long for its frame size")
        sealed = self._aead.encrypt(
            _nonce(self._base, self.index), plaintext, _aad(self._header, self.index, flag)
        )
        self.index += 1
        return sealed

    def regular(self, plaintext: bytes) -> bytes:
        assert len(plaintext) == self.frame_size
        return bytes([REGULAR]) + self._seal(plaintext, REGULAR)

    def final(self, plaintext: bytes) -> bytes:
        assert len(plaintext) <= self.frame_size
        return bytes([FINAL]) + struct.pack(">I", len(plaintext)) + self._seal(plaintext, FINAL)


def frames_open(read: object, header: Header, aead: AESGCM) -> Iterator[tuple[bytes, bool]]:
    """Yield (plaintext, is_final) per frame, each after its tag verified (`aead` from
    `opener`). After the final frame, checks that nothing follows before yielding it."""
    reader = _Reader(read)
    bound = header.hash if header.version == V1 else header.raw  # what every frame's aad binds
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
                _nonce(header.nonce_base, index), sealed, _aad(bound, index, flag)
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
    return b"".join(part for part, _ in frames_open(stream.read, header, opener(header, data_key)))
