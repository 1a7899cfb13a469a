"""The L4 envelope matches docs/envelope.md: KCM's code and an independent implementation
written from that page both reproduce the published test vectors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from apps.keychain import crypto

VECTORS = json.loads((Path(__file__).parents[2] / "docs" / "envelope-vectors.json").read_text())[
    "vectors"
]


def independent_envelope(v: dict[str, Any]) -> bytes:
    """From the documentation alone, with no KCM code."""
    key = bytes.fromhex(v["key_hex"])
    context = json.dumps(
        v["context"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()
    ctx_key = hmac.new(key, b"kcm context check v1\x01", hashlib.sha256).digest()
    header = (
        b"KC"
        + bytes([1, v["kind"]])
        + uuid.UUID(v["tenant"]).bytes
        + uuid.UUID(v["service_key"]).bytes
        + struct.pack(">I", v["version"])
        + hmac.new(ctx_key, context, hashlib.sha256).digest()[:16]
    )
    nonce = bytes.fromhex(v["nonce_hex"])
    return (
        header
        + nonce
        + AESGCM(key).encrypt(nonce, bytes.fromhex(v["plaintext_hex"]), header + context)
    )


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_an_independent_implementation_reproduces_the_vector(vector: dict[str, Any]) -> None:
    assert base64.b64encode(independent_envelope(vector)).decode() == vector["envelope_b64"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_kcm_opens_the_vector_and_refuses_a_changed_byte(vector: dict[str, Any]) -> None:
    key = bytes.fromhex(vector["key_hex"])
    blob = base64.b64decode(vector["envelope_b64"])
    envelope = crypto.envelope_parse(blob)
    assert (envelope.tenant, envelope.key_id, envelope.version, envelope.kind) == (
        uuid.UUID(vector["tenant"]),
        uuid.UUID(vector["service_key"]),
        vector["version"],
        vector["kind"],
    )
    context = crypto.canonical_context(vector["context"])
    opened = crypto.envelope_open(
        cipher=AESGCM(key), ctx_key=crypto.context_key(key), envelope=envelope, context=context
    )
    assert opened == bytes.fromhex(vector["plaintext_hex"])
    for position in (4, 36, len(blob) - 1):  # tenant, version, tag
        changed = bytearray(blob)
        changed[position] ^= 0x80
        with pytest.raises((crypto.CiphertextInvalid, crypto.CiphertextMalformed)):
            crypto.envelope_open(
                cipher=AESGCM(key),
                ctx_key=crypto.context_key(key),
                envelope=crypto.envelope_parse(bytes(changed)),
                context=context,
            )


def test_kcm_seals_what_the_independent_implementation_opens() -> None:
    key = AESGCM.generate_key(256)
    tenant, key_id = uuid.uuid4(), uuid.uuid4()
    context = crypto.canonical_context({"b": "2", "a": "1"})
    blob = crypto.envelope_seal(
        cipher=AESGCM(key), ctx_key=crypto.context_key(key), kind=1, tenant=tenant,
        key_id=key_id, version=3, context=context, plaintext=b"k" * 32,
    )  # fmt: skip
    header, nonce, body = blob[:56], blob[56:68], blob[68:]
    assert AESGCM(key).decrypt(nonce, body, header + b'{"a":"1","b":"2"}') == b"k" * 32


@pytest.mark.parametrize("context", [{"n": 1}, {"l": ["x"]}, {"d": {}}, ["a"], "s", {1: "x"}])
def test_the_context_memo_refuses_what_canonical_context_refuses(context: Any) -> None:
    memo = crypto.ContextMemo(b"k" * 32, {1: b"p" * 40})
    with pytest.raises(crypto.InvalidContext):
        memo.get(context)


def test_the_context_memo_agrees_with_the_reference_computation() -> None:
    memo = crypto.ContextMemo(b"k" * 32, {1: b"p" * 40})
    for context in ({"b": "2", "a": "1"}, {"a": "1", "b": "2"}, None, {}):
        canonical = crypto.canonical_context(context)
        assert memo.get(context) == (canonical, crypto.context_check(b"k" * 32, canonical))


def test_a_memoised_seal_opens_like_a_reference_one() -> None:
    key = AESGCM.generate_key(256)
    tenant, key_id = uuid.uuid4(), uuid.uuid4()
    prefix = crypto.envelope_prefix(kind=1, tenant=tenant, key_id=key_id, version=5)
    memo = crypto.ContextMemo(crypto.context_key(key), {1: prefix})
    header, aad = memo.sealing(1, {"a": "1"})
    blob = crypto.envelope_seal_fast(cipher=AESGCM(key), header=header, aad=aad, plaintext=b"p")
    envelope = crypto.envelope_parse(blob)
    assert (envelope.tenant, envelope.key_id, envelope.version) == (tenant, key_id, 5)
    opened = crypto.envelope_open(
        cipher=AESGCM(key), ctx_key=crypto.context_key(key), envelope=envelope,
        context=crypto.canonical_context({"a": "1"}),
    )  # fmt: skip
    assert opened == b"p"
