"""The KCM message format, version 3 (docs/message-format.md): pure functions, no network.

A message is a header (which names the service key, carries the L4 envelope of its data key
and the encryption context, and ends in a GMAC tag), the message's nonce base, then
AES-256-GCM frames, all under the data key itself. The header holds nothing per message, so a
data key's header and its tag are made once and serve all its messages (the SDK's cache reuses
a data key for many): a cached encrypt of a one-frame message is one AES-GCM call. Each
frame's nonce comes from the nonce base and its index, and its associated data binds the whole
header and whether it is the final frame, so changed, reordered, dropped or borrowed frames all
fail authentication. Versions 2 and 1 are still read.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import itertools
import json
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import errors

MAGIC = b"KCMF"
FORMAT_VERSION = 3
ALG_AES256GCM = 3  # frames and the header's GMAC tag under the data key, header made per key
V2, ALG_V2 = 2, 2  # read only: message id and nonce base in the header, its tag per message
V1, ALG_V1_HKDF = 1, 1  # read only: HKDF-SHA256 message keys, HMAC-SHA256 header tag
_ALGORITHMS = {FORMAT_VERSION: ALG_AES256GCM, V2: ALG_V2, V1: ALG_V1_HKDF}
DEFAULT_FRAME_SIZE = 64 * 1024
MAX_FRAME_SIZE = 16 * 1024 * 1024
MAX_FRAMES = 2**32  # frame indexes fit the low 32 bits of the nonce
MAX_ENVELOPE = 1024
MAX_CONTEXT = 4096
TAG = 16
HEADER_TAG = 16
NONCE = 12
_LEAD = struct.Struct(">BHI")  # after the magic: version, algorithm, frame size
_V2_IDS = struct.Struct(">32s12s")  # versions 1 and 2: message id, nonce base
_LENGTH = struct.Struct(">H")
_NONCE_BASE = struct.Struct(">Q4s")  # a message's counter (top bit clear), the key's low bytes
_LAST_COUNTER = 1 << 63  # nonce bases keep their top bit clear; header nonces have it set
REGULAR, FINAL = 0, 1
_SIZE = struct.Struct(">I")
_FINAL_HEAD = struct.Struct(">BI")  # a final frame's type and length
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
    """A message's header as read, before (or after) its tag is checked. In version 3 the
    nonce base follows the header (it is not in `raw`) and also serves as `message_id`."""

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
    header_nonce: bytes  # the nonce of the header tag (versions 2 and 3)

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

    @property
    def length(self) -> int:
        """Bytes before the first frame: the header, and in version 3 the nonce base."""
        return len(self.raw) + (NONCE if self.version == FORMAT_VERSION else 0)


def _v1_keys(data_key: bytes, message_id: bytes) -> tuple[bytes, bytes]:
    """Version 1's per-message (encryption, header MAC) keys: HKDF-SHA256 (RFC 5869) of the
    data key salted with the message id, written out with one-shot HMACs."""
    prk = hmac.digest(message_id, data_key, "sha256")
    first = hmac.digest(prk, _KDF_INFO + b"\x01", "sha256")
    second = hmac.digest(prk, first + _KDF_INFO + b"\x02", "sha256")
    return first, second


def header_tail(service_key: str, envelope: bytes, context_json: bytes) -> bytes:
    """The header's bytes after its fixed fields: the same for every message of a data key."""
    name = service_key.encode()
    if not 1 <= len(name) <= 255 or len(envelope) > MAX_ENVELOPE:
        raise ValueError("service key name or envelope out of range")
    if len(context_json) > MAX_CONTEXT:
        raise errors.InvalidContext(f"context is over {MAX_CONTEXT} bytes")
    return b"".join(
        (bytes([len(name)]), name, _LENGTH.pack(len(envelope)), envelope,
         _LENGTH.pack(len(context_json)), context_json)
    )  # fmt: skip


class MessageKey:
    """A data key ready to seal messages, kept with it in the cache: its AES-GCM object, its
    header per frame size (made once, under a fresh random header nonce) and its messages'
    nonce bases: a counter (from a random start below 2^62, so the top bit stays clear) then 4
    random bytes drawn once, frame indexes XORed into those. Never random per message, so no
    two messages of a key can share a nonce however many it seals."""

    def __init__(
        self, data_key: bytes, *, service_key: str, envelope: bytes, context_json: bytes
    ) -> None:
        self.aead = AESGCM(data_key)
        self.tail = header_tail(service_key, envelope, context_json)
        seed = os.urandom(12)
        self._counter = itertools.count(int.from_bytes(seed[:8], "big") >> 2).__next__
        self._low = seed[8:]
        self._headers: dict[int, tuple[bytes, bytes]] = {}  # frame size: header, frame 0 aad

    def header(self, frame_size: int, header_nonce: bytes | None = None) -> bytes:
        """This key's header for `frame_size` (fixed `header_nonce`: test vectors only)."""
        if header_nonce is None:
            made = self._headers.get(frame_size)
            if made is not None:
                return made[0]
            nonce = bytearray(os.urandom(NONCE))
            nonce[0] |= 0x80  # header nonces have the top bit set, nonce bases never
            header_nonce = bytes(nonce)
        if not 1 <= frame_size <= MAX_FRAME_SIZE:
            raise ValueError(f"frame size must be 1..{MAX_FRAME_SIZE}")
        if len(header_nonce) != NONCE or not header_nonce[0] & 0x80:
            raise ValueError("a header nonce is 12 bytes with the top bit set")
        body = b"".join(
            (MAGIC, _LEAD.pack(FORMAT_VERSION, ALG_AES256GCM, frame_size), header_nonce, self.tail)
        )
        header = body + self.aead.encrypt(header_nonce, b"", body)
        if len(self._headers) < 64:
            self._headers.setdefault(frame_size, (header, header[-HEADER_TAG:] + _FINAL_0))
        return header

    def nonce_base(self) -> bytes:
        """The next message's nonce base (thread-safe: the counter is one atomic step)."""
        counter = self._counter()
        if counter >= _LAST_COUNTER:
            raise ValueError("this data key has sealed all the messages it may")
        return _NONCE_BASE.pack(counter, self._low)

    def start(
        self, frame_size: int, *, header_nonce: bytes | None = None,
        nonce_base: bytes | None = None,
    ) -> tuple[bytes, FrameSealer]:  # fmt: skip
        """A new message's leading bytes (header and nonce base) and its frame sealer."""
        header = self.header(frame_size, header_nonce)
        if nonce_base is None:
            nonce_base = self.nonce_base()
        elif len(nonce_base) != NONCE or nonce_base[0] & 0x80:
            raise ValueError("a nonce base is 12 bytes with the top bit clear")
        sealer = FrameSealer(self.aead, header[-HEADER_TAG:], nonce_base, frame_size)
        return header + nonce_base, sealer

    def seal(self, data: bytes, frame_size: int) -> bytes:
        """A whole message of `data`. One that fits a frame (the common cached case) is sealed
        inline with the key's ready header: one AES-GCM call and no more."""
        made = self._headers.get(frame_size)
        if made is None or len(data) > frame_size:
            lead, sealer = self.start(frame_size)  # (which refuses a bad frame size)
            return lead + seal_all(sealer, data)
        counter = self._counter()
        if counter >= _LAST_COUNTER:
            raise ValueError("this data key has sealed all the messages it may")
        nonce_base = _NONCE_BASE.pack(counter, self._low)
        sealed = self.aead.encrypt(nonce_base, data, made[1])
        return b"".join((made[0], nonce_base, _FINAL_HEAD.pack(FINAL, len(data)), sealed))


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
    """Parse a header (and in version 3 the nonce base after it) from `read` (a file's read
    method) without checking its tag."""
    reader = _Reader(read)
    if reader.take(4, "header") != MAGIC:
        raise errors.MessageMalformed("not a KCM message (bad magic)")
    version, algorithm, frame_size = _LEAD.unpack(reader.take(_LEAD.size, "header"))
    if version not in _ALGORITHMS:
        raise errors.UnsupportedFormat(f"message format {version} is not supported")
    if algorithm != _ALGORITHMS[version]:
        raise errors.UnsupportedAlgorithm(f"algorithm {algorithm} is not supported")
    if not 1 <= frame_size <= MAX_FRAME_SIZE:
        raise errors.MessageMalformed("frame size out of range")
    if version == FORMAT_VERSION:
        header_nonce = reader.take(NONCE, "header")
        if not header_nonce[0] & 0x80:
            raise errors.MessageMalformed("the header nonce's top bit is clear")
        message_id = nonce_base = b""  # after the header
    else:
        message_id, nonce_base = _V2_IDS.unpack(reader.take(_V2_IDS.size, "header"))
        flipped = bytes([nonce_base[0] ^ 0x80]) + nonce_base[1:]  # B XOR 2^95
        header_nonce = flipped if version == V2 else b""
    name_len = reader.take(1, "header")[0]
    if name_len == 0:
        raise errors.MessageMalformed("empty service key name")
    try:
        service_key = reader.take(name_len, "header").decode()
    except UnicodeDecodeError:
        raise errors.MessageMalformed("service key name is not UTF-8") from None
    (env_len,) = _LENGTH.unpack(reader.take(2, "header"))
    if env_len > MAX_ENVELOPE:
        raise errors.MessageMalformed("envelope too long")
    envelope = reader.take(env_len, "header")
    (ctx_len,) = _LENGTH.unpack(reader.take(2, "header"))
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
    raw = bytes(reader.taken)
    if version == FORMAT_VERSION:
        message_id = nonce_base = reader.take(NONCE, "nonce base", keep=False)
        if nonce_base[0] & 0x80:
            raise errors.MessageMalformed("the nonce base's top bit is set")
    return Header(
        version, algorithm, frame_size, message_id, nonce_base, service_key, envelope,
        context_json, tag, raw, header_nonce,
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
        expected = aead.encrypt(header.header_nonce, b"", body)
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

    def __init__(self, aead: AESGCM, bound: bytes, nonce_base: bytes, frame_size: int) -> None:
        self._aead = aead
        self._bound = bound  # what every frame's aad starts with: the header tag (version 3)
        self._base = nonce_base
        self.frame_size = frame_size
        self.index = 0

    def _seal(self, plaintext: bytes, flag: int) -> bytes:
        if self.index >= MAX_FRAMES:
            raise ValueError("message too long for its frame size")
        sealed = self._aead.encrypt(
            _nonce(self._base, self.index), plaintext, _aad(self._bound, self.index, flag)
        )
        self.index += 1
        return sealed

    def regular(self, plaintext: bytes) -> bytes:
        assert len(plaintext) == self.frame_size
        return b"\x00" + self._seal(plaintext, REGULAR)

    def final(self, plaintext: bytes) -> bytes:
        assert len(plaintext) <= self.frame_size
        return _FINAL_HEAD.pack(FINAL, len(plaintext)) + self._seal(plaintext, FINAL)


def frames_open(read: object, header: Header, aead: AESGCM) -> Iterator[tuple[bytes, bool]]:
    """Yield (plaintext, is_final) per frame, each after its tag verified (`aead` from
    `opener`). After the final frame, checks that nothing follows before yielding it."""
    reader = _Reader(read)
    # What every frame's aad starts with, binding the header: its tag, which only a holder of
    # the data key can make (version 3), the header itself (2), or its SHA-256 (1).
    bound = {FORMAT_VERSION: header.tag, V2: header.raw}.get(header.version) or header.hash
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
    parts = [sealer.regular(data[i * size : (i + 1) * size]) for i in range(regular)]
    parts.append(sealer.final(data[regular * size :]))
    return b"".join(parts)


def open_with_key(data: bytes, data_key: bytes) -> bytes:
    """A whole message's plaintext given its data key (test vectors; no server involved)."""
    stream = io.BytesIO(data)
    header = header_read(stream.read)
    return b"".join(part for part, _ in frames_open(stream.read, header, opener(header, data_key)))
