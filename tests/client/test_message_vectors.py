"""docs/message-vectors.json against a from-scratch reading of docs/message-format.md (no
kcm_client code in the decoder below), and against kcm_client itself."""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
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
    if take(1) != b"\x01":
        raise Refused("version")
    if take(2) != b"\x00\x01":
        raise Refused("algorithm")
    (frame_size,) = struct.unpack(">I", take(4))
    message_id, nonce_base = take(32), take(12)
    name = take(take(1)[0]).decode()
    envelope = take(struct.unpack(">H", take(2))[0])
    context = take(struct.unpack(">H", take(2))[0])
    body_end = pos
    tag = take(16)
    okm = HKDF(hashes.SHA256(), 64, salt=message_id, info=b"KCM message v1").derive(data_key)
    if not hmac.compare_digest(hmac.new(okm[32:], data[:body_end], "sha256").digest()[:16], tag):
        raise Refused("header tag")
    header_hash = hashlib.sha256(data[:pos]).digest()
    aead = AESGCM(okm[:32])
    plaintext = b""
    index = 0
    while True:
        kind = take(1)[0]
        size = frame_size if kind == 0 else struct.unpack(">I", take(4))[0]
        if kind not in (0, 1) or size > frame_size:
            raise Refused("frame")
        nonce = (int.from_bytes(nonce_base, "big") ^ index).to_bytes(12, "big")
        aad = header_hash + index.to_bytes(8, "big") + bytes([kind])
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
