#!/usr/bin/env python3
"""Write docs/envelope-vectors.json, the test vectors of the L4 envelope (docs/envelope.md).

    .venv/bin/python tools/envelope_vectors.py           # rewrite the file
    .venv/bin/python tools/envelope_vectors.py --check   # exit 1 if the file is not what it makes

Deterministic: every key, nonce and data key is fixed here. Every envelope is made, every
invalid vector's error confirmed, by `datakeys.run`, the function behind the API's
generate-data-key, decrypt-data-key, encrypt, decrypt and rewrap, with the service key built as
the key chain builds it (`loaded_service_key`) instead of loaded from the database and the HSM,
which the vectors do not need. tests/keychain/test_envelope_vectors.py uses the same helpers.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from unittest import mock
from uuid import UUID

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kms_project.settings")
os.environ.setdefault("KCM_DATABASE_URL", "postgres://unused@/unused")  # never connected to

import django  # noqa: E402
from django.apps import apps  # noqa: E402

if not apps.ready:
    django.setup()


from apps.core.errors import KcmError  # noqa: E402
from apps.keychain import crypto, datakeys  # noqa: E402
from apps.keychain.cache import LoadedServiceKey, LoadedVersion  # noqa: E402

PATH = REPO / "docs" / "envelope-vectors.json"
OPERATIONS = {crypto.KIND_DATA_KEY: "decrypt-data-key", crypto.KIND_PAYLOAD: "decrypt"}


def loaded_service_key(
    *, key: bytes, tenant: UUID, service_key: UUID, version: int
) -> LoadedServiceKey:
    """A service key with one version, `key`, whose version is built by `LoadedVersion.of`,
    as chain.load_service_key builds every one."""
    loaded_version = LoadedVersion.of(
        key, tenant=tenant, key_id=service_key, version=version, row_id=0
    )
    return LoadedServiceKey(
        schema="vectors",
        key_id=service_key,
        name="vectors",
        tenant_uid=tenant,
        primary=version,
        versions={version: loaded_version},
        epoch=0,
        uses_left=2**32,  # no reservation in the database
    )


def opener(vector: dict[str, Any]) -> LoadedServiceKey:
    """The service key a vector names: its key, tenant, service key id and version."""
    return loaded_service_key(
        key=bytes.fromhex(vector["key_hex"]),
        tenant=UUID(vector["tenant"]),
        service_key=UUID(vector["service_key"]),
        version=vector["version"],
    )


@contextmanager
def serving(
    loaded: LoadedServiceKey, *, nonce: bytes | None = None, data_key: bytes | None = None
) -> Iterator[None]:
    """While inside, `datakeys.run`/`run_batch` use `loaded` as the key chain's answer and, when
    given, `nonce` and `data_key` instead of fresh random ones."""
    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(datakeys, "load_service_key", return_value=loaded))
        if nonce is not None:
            stack.enter_context(mock.patch.object(crypto, "new_nonce", return_value=nonce))
        if data_key is not None:
            stack.enter_context(mock.patch.object(datakeys, "new_data_key", return_value=data_key))
        yield


def request(
    loaded: LoadedServiceKey, operation: str, item: dict[str, Any], **fixed: bytes
) -> dict[str, Any]:
    """`datakeys.run` as the API calls it; raises the KcmError the API would render."""
    with serving(loaded, **fixed):
        return datakeys.run(service_key=loaded.name, operation=operation, item=item)


def _fixed(label: str, size: int) -> bytes:
    return hashlib.sha256(f"kcm envelope vector: {label}".encode()).digest()[:size]


# --- positive vectors: the first three are the original ones, inputs unchanged ---------------

POSITIVE: list[dict[str, Any]] = [
    {
        "name": "data key, empty context",
        "key_hex": "dba7a42470a59dea657a11fbb8c3d504082a483529397358646b8f4cb0e4d0bc",
        "tenant": "11110000-0000-0000-0000-000000000000",
        "service_key": "22220000-0000-0000-0000-000000000000",
        "version": 1,
        "kind": 1,
        "context": {},
        "nonce_hex": "7e47af158e9db54fc5e49029",
        "plaintext_hex": bytes(range(32)).hex(),
    },
    {
        "name": "data key, context",
        "key_hex": "8a4f67c16c0dd368e46a3caf97f7a310a636ce47aa2e1e5b248abecc9b5e039d",
        "tenant": "11110000-0000-0000-0000-000000000001",
        "service_key": "22220000-0000-0000-0000-000000000001",
        "version": 7,
        "kind": 1,
        "context": {"tenant_record": "invoice-42", "purpose": "billing"},
        "nonce_hex": "654e2c87d7820cbeb1b5b550",
        "plaintext_hex": bytes(range(32, 64)).hex(),
    },
    {
        "name": "payload, non-ASCII context",
        "key_hex": "8dfcf70e5537ca1d67d62538678523c4b59245e46f0af31930de43dc20aeb051",
        "tenant": "11110000-0000-0000-0000-000000000002",
        "service_key": "22220000-0000-0000-0000-000000000002",
        "version": 4294967295,
        "kind": 2,
        "context": {"région": "Zürich", "a": ""},
        "nonce_hex": "e889d30b85421e8cc830d15f",
        "plaintext_hex": "payload ✓".encode().hex(),
    },
]

_NEW: list[tuple[str, str, str, int, int, dict[str, str], bytes]] = [
    # name, tenant, service key, version, kind, context, payload (data keys are fixed below)
    (
        "data key, non-ASCII keys and values",
        "3f2a9c4e-7b1d-4e8a-9f60-5c3b2a1d0e9f",
        "a7c41e02-95d3-4b6f-8e21-0f9d8c7b6a54",
        2,
        1,
        {"name": "ünïcødé", "emoji": "🔑", "city": "東京", "ключ": "значение"},
        b"",
    ),
    (
        "payload, escaped characters",
        "3f2a9c4e-7b1d-4e8a-9f60-5c3b2a1d0e9f",
        "a7c41e02-95d3-4b6f-8e21-0f9d8c7b6a54",
        3,
        2,
        {
            "quote": 'say "hi"',
            "backslash": "C:\\temp\\",
            "control": "tab\there\nnew line\rCR\x00NUL\x1fUS\x7fDEL\x08BS\x0cFF",
            "separators": "line\u2028paragraph\u2029end",
            "slash": "</script>",
        },
        b"escaped \x00 bytes \xff",
    ),
    (
        "data key, keys in code-point order",
        "c0ffee00-1234-4abc-8def-0123456789ab",
        "5e1f0a2b-6c7d-4e8f-9a0b-1c2d3e4f5a6b",
        65536,
        1,
        # Code points order them "", "Z", "z", "zz", "é", U+FFFD, U+1F511 ("🔑"); UTF-16 code
        # units would put "🔑" (D83D DD11) before U+FFFD.
        {"🔑": "7", "\ufffd": "6", "é": "5", "zz": "4", "z": "3", "Z": "2", "": "1"},
        b"",
    ),
]
for _name, _tenant, _key, _version, _kind, _context, _plaintext in _NEW:
    POSITIVE.append(
        {
            "name": _name,
            "key_hex": _fixed(f"key {_name}", 32).hex(),
            "tenant": _tenant,
            "service_key": _key,
            "version": _version,
            "kind": _kind,
            "context": _context,
            "nonce_hex": _fixed(f"nonce {_name}", 12).hex(),
            "plaintext_hex": (
                _plaintext if _kind == crypto.KIND_PAYLOAD else _fixed(f"data key {_name}", 32)
            ).hex(),
        }
    )


def sealed(vector: dict[str, Any]) -> dict[str, Any]:
    """`vector` with the envelope that generate-data-key or encrypt returns for its inputs."""
    plaintext = bytes.fromhex(vector["plaintext_hex"])
    nonce = bytes.fromhex(vector["nonce_hex"])
    loaded = opener(vector)
    if vector["kind"] == crypto.KIND_DATA_KEY:
        item = {"context": vector["context"]}
        made = request(loaded, "generate-data-key", item, nonce=nonce, data_key=plaintext)
    else:
        item = {"context": vector["context"], "plaintext": datakeys.b64(plaintext)}
        made = request(loaded, "encrypt", item, nonce=nonce)
    return {**vector, "envelope_b64": made["ciphertext"]}


# --- invalid vectors: variations of one envelope, each with the error it must raise ----------


def _changed(blob: bytes, offset: int, value: int | None = None) -> bytes:
    changed = bytearray(blob)
    changed[offset] = changed[offset] ^ 0x01 if value is None else value
    return bytes(changed)


def _uuid_at(blob: bytes, offset: int, uuid: str) -> bytes:
    return blob[:offset] + UUID(uuid).bytes + blob[offset + 16 :]


def _noncanonical(text: str) -> str:
    """`text` with unused bits set in its last base64 character (it has one "=")."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    assert text.endswith("=") and not text.endswith("==")
    last = alphabet.index(text[-2])
    return text[:-2] + alphabet[last | 0x01] + "="


def invalid(base: dict[str, Any]) -> list[dict[str, Any]]:
    """Invalid inputs for the key of `base` (a positive data-key vector with a context)."""
    blob = base64.b64decode(base["envelope_b64"])
    text = base["envelope_b64"]
    ctx = base["context"]
    other_ctx = {**ctx, "tenant_record": "invoice-43"}
    other_tenant = "99990000-0000-0000-0000-000000000001"
    other_key = "99990000-0000-0000-0000-000000000002"
    loaded = opener(base)
    payload = request(
        loaded,
        "encrypt",
        {"context": ctx, "plaintext": "cGF5bG9hZA=="},
        nonce=_fixed("payload nonce", 12),
    )["ciphertext"]
    retired = {**base, "version": base["version"] - 1, "key_hex": _fixed("retired", 32).hex()}
    old = request(
        opener(retired), "generate-data-key", {"context": ctx},
        nonce=_fixed("old nonce", 12), data_key=_fixed("old data key", 32),
    )  # fmt: skip
    cases: list[tuple[str, str | bytes, dict[str, Any], int, str]] = [
        # name, envelope (bytes are base64-encoded), context, kind opened as, error
        ("base64: URL-safe alphabet", text.replace("+", "-").replace("/", "_"), ctx, 1,
         "invalid_base64"),
        ("base64: padding missing", text.rstrip("="), ctx, 1, "invalid_base64"),
        ("base64: line break", text[:64] + "\n" + text[64:], ctx, 1, "invalid_base64"),
        ("base64: unused bits set", _noncanonical(text), ctx, 1, "invalid_base64"),
        ("shorter than header, nonce and tag", blob[:83], ctx, 1, "ciphertext_malformed"),
        ("bad magic", _changed(blob, 0, ord("k")), ctx, 1, "ciphertext_malformed"),
        ("unknown format version", _changed(blob, 2, 2), ctx, 1, "ciphertext_malformed"),
        ("unknown kind", _changed(blob, 3, 3), ctx, 1, "ciphertext_malformed"),
        ("data key opened as a payload", blob, ctx, 2, "ciphertext_malformed"),
        ("payload opened as a data key", payload, ctx, 1, "ciphertext_malformed"),
        ("another tenant", _uuid_at(blob, 4, other_tenant), ctx, 1, "ciphertext_wrong_tenant"),
        ("another service key", _uuid_at(blob, 20, other_key), ctx, 1, "ciphertext_wrong_key"),
        ("version not held", old["ciphertext"], ctx, 1, "key_version_unavailable"),
        ("context value not a string", blob, {**ctx, "n": 1}, 1, "invalid_context"),
        ("another context", blob, other_ctx, 1, "context_mismatch"),
        ("no context", blob, {}, 1, "context_mismatch"),
        ("context check changed", _changed(blob, 40), ctx, 1, "context_mismatch"),
        ("nonce changed", _changed(blob, 56), ctx, 1, "ciphertext_invalid"),
        ("ciphertext changed", _changed(blob, 68), ctx, 1, "ciphertext_invalid"),
        ("tag changed", _changed(blob, len(blob) - 1), ctx, 1, "ciphertext_invalid"),
        ("last byte missing", blob[:-1], ctx, 1, "ciphertext_invalid"),
        # The order of the checks, where more than one fails:
        ("bad magic and another tenant", _changed(_uuid_at(blob, 4, other_tenant), 0, 0), ctx,
         1, "ciphertext_malformed"),
        ("another tenant and a context that is not valid", _uuid_at(blob, 4, other_tenant),
         {"n": 1}, 1, "ciphertext_wrong_tenant"),
        ("version not held and another context", old["ciphertext"], other_ctx, 1,
         "key_version_unavailable"),
        ("another context and tag changed", _changed(blob, len(blob) - 1), other_ctx, 1,
         "context_mismatch"),
    ]  # fmt: skip
    vectors = []
    for name, envelope, context, kind, error in cases:
        encoded = envelope if isinstance(envelope, str) else datakeys.b64(envelope)
        got = _error(loaded, OPERATIONS[kind], {"ciphertext": encoded, "context": context})
        if got != error:
            raise SystemExit(f"invalid vector {name!r}: {got or 'no error'}, not {error}")
        vectors.append(
            {"name": name, **{key: base[key] for key in ("key_hex", "tenant", "service_key")},
             "version": base["version"], "kind": kind, "context": context, "envelope_b64": encoded,
             "error": error}
        )  # fmt: skip
    return vectors


def _error(loaded: LoadedServiceKey, operation: str, item: dict[str, Any]) -> str | None:
    try:
        request(loaded, operation, item)
    except KcmError as exc:
        return exc.code
    return None


def document() -> dict[str, Any]:
    vectors = [sealed(vector) for vector in POSITIVE]
    contexts = [
        {"context": v["context"], "canonical_hex": crypto.canonical_context(v["context"]).hex()}
        for v in vectors
    ]
    return {"format": 1, "vectors": vectors, "contexts": contexts, "invalid": invalid(vectors[1])}


def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if PATH.read_text(encoding="utf-8") != text:
            print(f"{PATH.relative_to(REPO)} is not what this tool makes; run it.")
            return 1
        return 0
    PATH.write_text(text, encoding="utf-8")
    print(f"wrote {PATH.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
