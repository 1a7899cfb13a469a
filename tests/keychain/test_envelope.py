"""docs/envelope.md is enough to implement the L4 envelope: an implementation written from that
page alone, with no KCM code (canonical JSON by its rules, not by Python's json module),
reproduces every published vector and refuses every invalid one with the same error, in the
documented order. KCM's own path is checked against the same vectors in
test_envelope_vectors.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from apps.keychain import crypto
from tools import envelope_vectors as tool

DOCS = Path(__file__).parents[2] / "docs"
DOC = json.loads((DOCS / "envelope-vectors.json").read_text("utf-8"))
VECTORS, CONTEXTS, INVALID = DOC["vectors"], DOC["contexts"], DOC["invalid"]


# --- the independent implementation: docs/envelope.md, section by section ------------------


class Refused(Exception):
    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n",
                  "\f": "\\f", "\r": "\\r"}  # fmt: skip


def _json_string(text: str) -> str:
    out = []
    for char in text:
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif ord(char) < 0x20:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def canonical(context: Any) -> bytes:
    if not isinstance(context, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in context.items()
    ):
        raise Refused("invalid_context")
    members = sorted(context.items(), key=lambda member: member[0].encode("utf-8"))
    text = "{" + ",".join(_json_string(k) + ":" + _json_string(v) for k, v in members) + "}"
    if len(text.encode("utf-8")) > 4096:
        raise Refused("invalid_context")
    return text.encode("utf-8")


_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def strict_b64decode(text: str) -> bytes:
    if not _BASE64.fullmatch(text):
        raise Refused("invalid_base64")
    data = base64.b64decode(text)
    if base64.b64encode(data).decode("ascii") != text:  # unused bits set
        raise Refused("invalid_base64")
    return data


def _check(key: bytes, context: bytes) -> bytes:
    ctx_key = hmac.new(key, b"kcm context check v1\x01", hashlib.sha256).digest()
    return hmac.new(ctx_key, context, hashlib.sha256).digest()[:16]


def seal(v: dict[str, Any]) -> str:
    key, context = bytes.fromhex(v["key_hex"]), canonical(v["context"])
    header = (
        b"KC"
        + bytes([1, v["kind"]])
        + uuid.UUID(v["tenant"]).bytes
        + uuid.UUID(v["service_key"]).bytes
        + struct.pack(">I", v["version"])
        + _check(key, context)
    )
    nonce = bytes.fromhex(v["nonce_hex"])
    body = AESGCM(key).encrypt(nonce, bytes.fromhex(v["plaintext_hex"]), header + context)
    return base64.b64encode(header + nonce + body).decode("ascii")


def open_envelope(v: dict[str, Any], kind: int, context: Any, text: str) -> bytes:
    """Opens `text` with the service key of `v` (one version), in the documented order."""
    key = bytes.fromhex(v["key_hex"])
    blob = strict_b64decode(text)
    if len(blob) < 84 or blob[:3] != b"KC\x01" or blob[3] not in (1, 2):
        raise Refused("ciphertext_malformed")
    if blob[4:20] != uuid.UUID(v["tenant"]).bytes:
        raise Refused("ciphertext_wrong_tenant")
    if blob[20:36] != uuid.UUID(v["service_key"]).bytes:
        raise Refused("ciphertext_wrong_key")
    if blob[3] != kind:
        raise Refused("ciphertext_malformed")
    if struct.unpack(">I", blob[36:40])[0] != v["version"]:
        raise Refused("key_version_unavailable")
    encoded = canonical(context)
    if not hmac.compare_digest(blob[40:56], _check(key, encoded)):
        raise Refused("context_mismatch")
    try:
        return AESGCM(key).decrypt(blob[56:68], blob[68:], blob[:56] + encoded)
    except InvalidTag:
        raise Refused("ciphertext_invalid") from None


# --- the vectors against it ----------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_an_independent_implementation_reproduces_the_vector(vector: dict[str, Any]) -> None:
    assert seal(vector) == vector["envelope_b64"]
    opened = open_envelope(vector, vector["kind"], vector["context"], vector["envelope_b64"])
    assert opened == bytes.fromhex(vector["plaintext_hex"])


@pytest.mark.parametrize("entry", CONTEXTS, ids=[str(i) for i in range(len(CONTEXTS))])
def test_canonical_json_by_the_written_rules_matches(entry: dict[str, Any]) -> None:
    assert canonical(entry["context"]).hex() == entry["canonical_hex"]


@pytest.mark.parametrize("vector", INVALID, ids=[v["name"] for v in INVALID])
def test_an_independent_implementation_refuses_with_the_same_code(vector: dict[str, Any]) -> None:
    with pytest.raises(Refused) as refused:
        open_envelope(vector, vector["kind"], vector["context"], vector["envelope_b64"])
    assert refused.value.code == vector["error"]


def test_the_vectors_cover_what_implementations_get_wrong() -> None:
    text = "".join(k + v for entry in CONTEXTS for k, v in entry["context"].items())
    for char in ('"', "\\", "\x00", "\x1f", "\b", "\x7f", "/", "\u2028", "é", "東", "🔑"):
        assert char in text
    assert any(
        sorted(c["context"], key=lambda k: k.encode("utf-16-be"))
        != sorted(c["context"], key=lambda k: k.encode("utf-8"))
        for c in CONTEXTS
    )
    # Every error of the table in "Opening" has a vector.
    opening = (DOCS / "envelope.md").read_text().split("## Opening")[1].split("\n## ")[0]
    documented = re.findall(r"\| `([a-z0-9_]+)` \|$", opening, re.M)
    assert {v["error"] for v in INVALID} == set(documented)


# --- KCM's pieces against the independent implementation ------------------------------------


def test_kcm_seals_with_fresh_randomness_what_the_independent_one_opens() -> None:
    v = {"key_hex": os.urandom(32).hex(), "tenant": str(uuid.uuid4()),
         "service_key": str(uuid.uuid4()), "version": 3}  # fmt: skip
    context = {"b": "2", "a": "ü\n"}
    for operation, kind, item in (
        ("generate-data-key", 1, {"context": context}),
        ("encrypt", 2, {"context": context, "plaintext": "cGF5bG9hZA=="}),
    ):
        made = tool.request(tool.opener(v), operation, item)
        opened = open_envelope(v, kind, context, made["ciphertext"])
        assert base64.b64encode(opened).decode() == made.get("plaintext", item.get("plaintext"))


@pytest.mark.parametrize("context", [{"n": 1}, {"l": ["x"]}, {"d": {}}, ["a"], "s", {1: "x"}])
def test_the_context_memo_refuses_what_canonical_context_refuses(context: Any) -> None:
    memo = crypto.ContextMemo(b"k" * 32, {1: b"p" * 40})
    with pytest.raises(crypto.InvalidContext):
        memo.get(context)


def test_the_context_memo_agrees_with_the_reference_computation() -> None:
    memo = crypto.ContextMemo(b"k" * 32, {1: b"p" * 40})
    for context in ({"b": "2", "a": "1"}, {"a": "1", "b": "2"}, None, {}):
        encoded = crypto.canonical_context(context)
        assert memo.get(context) == (encoded, crypto.context_check(b"k" * 32, encoded))


def test_an_unpaired_surrogate_is_an_invalid_context_not_a_crash() -> None:
    with pytest.raises(crypto.InvalidContext):
        crypto.canonical_context({"a": "\ud800"})
