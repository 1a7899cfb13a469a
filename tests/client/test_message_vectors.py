"""docs/message-vectors.json against a from-scratch reading of docs/message-format.md (no
kcm_client code in the decoder below), and against kcm_client itself."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import struct
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from kcm_client import errors, message

from tools import message_vectors

VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "docs" / "message-vectors.json").read_text()
)


class Refused(Exception):
    pass


def independent_decrypt(data: bytes, data_key: bytes) -> tuple[dict[str, Any], bytes]:
    """The page, read literally: returns (header fields, plaintext) or raises Refused(why)."""
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            raise Refused("truncated")
        pos += n
        return data[pos - n : pos]

    if take(4) != b"KCMF":
        raise Refused("magic")
    if take(1) != b"\x03":
        raise Refused("version")
    if take(2) != b"\x00\x03":
        raise Refused("algorithm")
    (frame_size,) = struct.unpack(">I", take(4))
    header_nonce = take(12)
    name = take(take(1)[0]).decode()
    envelope = take(struct.unpack(">H", take(2))[0])
    context = take(struct.unpack(">H", take(2))[0])
    body_end = pos
    tag = take(16)
    nonce_base = take(12)
    if not header_nonce[0] & 0x80 or nonce_base[0] & 0x80:
        raise Refused("magic")  # the page: message_malformed, as a bad magic
    aead = AESGCM(data_key)
    if not hmac.compare_digest(aead.encrypt(header_nonce, b"", data[:body_end]), tag):
        raise Refused("header tag")
    plaintext = b""
    index = 0
    while True:
        kind = take(1)[0]
        size = frame_size if kind == 0 else struct.unpack(">I", take(4))[0]
        if kind not in (0, 1) or size > frame_size:
            raise Refused("frame")
        nonce = (int.from_bytes(nonce_base, "big") ^ index).to_bytes(12, "big")
        aad = tag + index.to_bytes(8, "big") + bytes([kind])
        try:
            plaintext += aead.decrypt(nonce, take(size + 16), aad)
        except InvalidTag:
            raise Refused("frame") from None
        if kind == 1:
            break
        index += 1
    if pos != len(data):
        raise Refused("trailing")
    fields = {"frame_size": frame_size, "service_key": name, "envelope": envelope,
              "context": json.loads(context)}  # fmt: skip
    return fields, plaintext


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_an_independent_decoder_opens_every_vector(vector: dict[str, Any]) -> None:
    fields, plaintext = independent_decrypt(
        bytes.fromhex(vector["message_hex"]), bytes.fromhex(vector["data_key_hex"])
    )
    assert plaintext.hex() == vector["plaintext_hex"]
    assert fields["context"] == vector["context"]
    assert fields["envelope"].hex() == vector["envelope_hex"]
    assert fields["service_key"] == vector["service_key"]
    assert fields["frame_size"] == vector["frame_size"]


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_kcm_client_makes_and_opens_every_vector(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["message_hex"])
    assert (
        message.open_with_key(data, bytes.fromhex(vector["data_key_hex"])).hex()
        == (vector["plaintext_hex"])
    )
    assert (
        message.canonical_context(vector["context"])
        == message.header_read(__import__("io").BytesIO(data).read).context_json
    )


INDEPENDENT_REASON = {
    "message_malformed": "magic",
    "message_format_unsupported": "version",
    "message_algorithm_unsupported": "algorithm",
    "message_header_invalid": "header tag",
    "message_frame_invalid": "frame",
    "message_truncated": "truncated",
    "message_trailing_data": "trailing",
}


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["change"])
def test_every_changed_message_is_refused_by_both_readers_for_the_same_reason(
    case: dict[str, Any],
) -> None:
    data, key = bytes.fromhex(case["message_hex"]), bytes.fromhex(case["data_key_hex"])
    with pytest.raises(Refused) as refused:
        independent_decrypt(data, key)
    assert str(refused.value) == INDEPENDENT_REASON[case["error"]]
    with pytest.raises(errors.MessageError) as caught:
        message.open_with_key(data, key)
    assert caught.value.code == case["error"]


def test_every_tamper_class_has_its_own_code() -> None:
    codes = {case["error"] for case in VECTORS["invalid"]}
    assert codes == set(INDEPENDENT_REASON)


def test_the_vectors_file_is_what_the_generator_makes() -> None:
    text = json.dumps(message_vectors.build(), indent=1, ensure_ascii=False) + "\n"
    assert message_vectors.OUT.read_text() == text


def _version_1_message(data_key: bytes, plaintext: bytes, frame_size: int) -> bytes:
    """A version 1 message (HKDF-SHA256 message keys, HMAC-SHA256 header tag, SHA-256 of the
    header in each frame's aad), written from that version's rules rather than kcm_client's."""
    message_id, nonce_base, context = b"\x11" * 32, b"\x22" * 12, b'{"v":"1"}'
    okm = HKDF(hashes.SHA256(), 64, salt=message_id, info=b"KCM message v1").derive(data_key)
    body = (
        b"KCMF\x01\x00\x01" + struct.pack(">I", frame_size) + message_id + nonce_base
        + b"\x08payments" + struct.pack(">H", 3) + b"env" + struct.pack(">H", len(context))
        + context
    )  # fmt: skip
    header = body + hmac.new(okm[32:], body, "sha256").digest()[:16]
    header_hash, aead = hashlib.sha256(header).digest(), AESGCM(okm[:32])
    chunks = [plaintext[i : i + frame_size] for i in range(0, len(plaintext), frame_size)]
    out = header
    for index, chunk in enumerate(chunks):
        kind = 1 if index == len(chunks) - 1 else 0
        nonce = (int.from_bytes(nonce_base, "big") ^ index).to_bytes(12, "big")
        sealed = aead.encrypt(nonce, chunk, header_hash + index.to_bytes(8, "big") + bytes([kind]))
        out += bytes([kind]) + (struct.pack(">I", len(chunk)) if kind else b"") + sealed
    return out


def test_version_1_messages_still_open_and_their_tampering_is_still_caught() -> None:
    key, plaintext = bytes(range(32)), bytes(range(40))
    old = _version_1_message(key, plaintext, 16)
    assert message.open_with_key(old, key) == plaintext
    with pytest.raises(errors.HeaderInvalid):
        message.open_with_key(old[:20] + bytes([old[20] ^ 1]) + old[21:], key)
    with pytest.raises(errors.FrameInvalid):
        message.open_with_key(old[:-1] + bytes([old[-1] ^ 1]), key)
    with pytest.raises(errors.UnsupportedAlgorithm):  # version 1 with version 2's algorithm
        message.open_with_key(old[:6] + b"\x02" + old[7:], key)


def _version_2_message(data_key: bytes, plaintext: bytes, frame_size: int) -> bytes:
    """A version 2 message (message id and random nonce base in the header, tag nonce
    B XOR 2^95, the whole header in each frame's aad), from that version's rules."""
    message_id, nonce_base, context = b"\x11" * 32, b"\x22" * 12, b'{"v":"2"}'
    body = (
        b"KCMF\x02\x00\x02" + struct.pack(">I", frame_size) + message_id + nonce_base
        + b"\x08payments" + struct.pack(">H", 3) + b"env" + struct.pack(">H", len(context))
        + context
    )  # fmt: skip
    aead = AESGCM(data_key)
    header_nonce = (int.from_bytes(nonce_base, "big") ^ (1 << 95)).to_bytes(12, "big")
    header = body + aead.encrypt(header_nonce, b"", body)
    chunks = [plaintext[i : i + frame_size] for i in range(0, len(plaintext), frame_size)]
    out = header
    for index, chunk in enumerate(chunks):
        kind = 1 if index == len(chunks) - 1 else 0
        nonce = (int.from_bytes(nonce_base, "big") ^ index).to_bytes(12, "big")
        sealed = aead.encrypt(nonce, chunk, header + index.to_bytes(8, "big") + bytes([kind]))
        out += bytes([kind]) + (struct.pack(">I", len(chunk)) if kind else b"") + sealed
    return out


def test_version_2_messages_still_open_and_their_tampering_is_still_caught() -> None:
    key, plaintext = bytes(range(32)), bytes(range(40))
    old = _version_2_message(key, plaintext, 16)
    assert message.open_with_key(old, key) == plaintext
    for at in (10, 20, 50):  # frame size, message id, nonce base: all under the header tag
        with pytest.raises(errors.HeaderInvalid):
            message.open_with_key(old[:at] + bytes([old[at] ^ 1]) + old[at + 1 :], key)
    with pytest.raises(errors.FrameInvalid):
        message.open_with_key(old[:-1] + bytes([old[-1] ^ 1]), key)


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 40])
def test_a_cached_keys_messages_follow_the_page_and_never_share_a_nonce_base(size: int) -> None:
    data_key, plaintext = bytes(range(32)), bytes(range(size))
    key = message.MessageKey(
        data_key, service_key="payments", envelope=b"env", context_json=b'{"a":"b"}'
    )
    sealed = [key.seal(plaintext, 16) for _ in range(50)]  # one-frame ones take the fast path
    sealed += [b"".join((lead, message.seal_all(s, plaintext))) for lead, s in
               (key.start(16) for _ in range(5))]  # fmt: skip
    for one in sealed:
        fields, opened = independent_decrypt(one, data_key)
        assert opened == plaintext and fields["context"] == {"a": "b"}
    header = len(message.header_read(io.BytesIO(sealed[0]).read).raw)
    assert {one[:header] for one in sealed} == {sealed[0][:header]}  # one header per key
    assert len({one[header : header + 12] for one in sealed}) == len(sealed)  # the nonce bases


def test_nonce_bases_stay_distinct_across_threads() -> None:
    key = message.MessageKey(bytes(32), service_key="payments", envelope=b"env", context_json=b"{}")
    bases: list[bytes] = []

    def seal_many() -> None:
        bases.extend(key.nonce_base() for _ in range(5000))

    threads = [threading.Thread(target=seal_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(bases)) == 20000 and not any(b[0] & 0x80 for b in bases)
