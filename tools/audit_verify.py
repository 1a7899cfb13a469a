#!/usr/bin/env python3
"""Verify a KCM audit export offline.

    python tools/audit_verify.py EXPORT MANIFEST [--public-key PEM]

Needs only Python 3.11 and the `cryptography` package; no access to KCM. Checks, in order:
the manifest's signature (by the platform audit key: pass the key you trust with
--public-key, otherwise the key inside the manifest is used and the result says so), that the
file is the one the manifest describes (SHA-256, count, first and last event), every event's
hash, the links between consecutive events, and the signed checkpoint when the export reaches
it. Exit status 0 if everything holds, 1 with the first problem otherwise. See docs/audit.md.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

FIELDS = ("occurred_at", "actor", "role", "source_ip", "user_agent", "request_id", "action",
          "target", "target_version", "outcome", "error_code", "details")  # fmt: skip
COLUMNS = ("seq", *FIELDS, "prev_hash", "hash")


class Invalid(Exception):
    pass


def event_hash(prev_hash: str, seq: int, event: dict[str, Any]) -> str:
    body = json.dumps(
        {k: event[k] for k in FIELDS}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(f"{prev_hash}\n{seq}\n{body}".encode()).hexdigest()


def read_events(data: bytes, file_format: str) -> Iterator[dict[str, Any]]:
    text = data.decode("utf-8")
    if file_format == "jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                raise Invalid(f"line {number} is not JSON") from None
        return
    reader = csv.reader(io.StringIO(text))
    if tuple(next(reader, ())) != COLUMNS:
        raise Invalid("unexpected CSV header")
    for row in reader:
        event: dict[str, Any] = dict(zip(COLUMNS, row, strict=True))
        event["seq"] = int(event["seq"])
        event["target_version"] = int(event["target_version"]) if event["target_version"] else None
        event["source_ip"] = event["source_ip"] or None
        event["details"] = json.loads(event["details"])
        yield event


def verify_signature(public_key: Any, signature_b64: str, message: bytes, what: str) -> None:
    try:
        public_key.verify(base64.b64decode(signature_b64), message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise Invalid(f"the {what} signature does not verify") from None


def verify(export_path: Path, manifest_path: Path, trusted_pem: bytes | None) -> list[str]:
    manifest = json.loads(manifest_path.read_text())
    notes = []
    if manifest.get("format") != "kcm-audit-export/1":
        raise Invalid("not a KCM audit export manifest (format kcm-audit-export/1)")
    pem = trusted_pem or manifest["public_key_pem"].encode()
    if trusted_pem is None:
        notes.append("signature checked with the key in the manifest: pass --public-key to pin it")
    public_key = load_pem_public_key(pem)
    unsigned = {k: v for k, v in manifest.items() if k != "signature"}
    message = json.dumps(
        unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()
    verify_signature(public_key, manifest["signature"], message, "manifest")

    data = export_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest["file_sha256"]:
        raise Invalid("the file's SHA-256 differs from the manifest's: the file was changed")
    count, previous = 0, None
    for event in read_events(data, manifest["file_format"]):
        seq = int(event["seq"])
        if event_hash(event["prev_hash"], seq, event) != event["hash"]:
            raise Invalid(f"event {seq}: content does not match its hash")
        if previous is not None:
            if seq <= previous["seq"]:
                raise Invalid(f"event {seq}: out of order")
            if seq == previous["seq"] + 1 and event["prev_hash"] != previous["hash"]:
                raise Invalid(f"event {seq}: does not link to event {previous['seq']}")
        elif (
            manifest["first_prev_hash"] is not None
            and event["prev_hash"] != manifest["first_prev_hash"]
        ):
            raise Invalid(f"event {seq}: first event differs from the manifest")
        previous = event
        count += 1
    if count != manifest["count"]:
        raise Invalid(f"{count} events in the file, the manifest says {manifest['count']}")
    if previous is not None and (previous["seq"], previous["hash"]) != (
        manifest["last_seq"],
        manifest["last_hash"],
    ):
        raise Invalid("the last event differs from the manifest")
    checkpoint = manifest.get("checkpoint")
    if checkpoint:
        verify_signature(
            public_key, checkpoint["signature"], checkpoint["message"].encode(), "checkpoint"
        )
        if (
            previous is not None
            and checkpoint["seq"] == previous["seq"]
            and checkpoint["hash"] != previous["hash"]
        ):
            raise Invalid("the last event differs from the signed checkpoint")
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--public-key", type=Path, help="the platform audit key (PEM) you trust")
    args = parser.parse_args(argv)
    try:
        notes = verify(
            args.export, args.manifest, args.public_key.read_bytes() if args.public_key else None
        )
    except (Invalid, KeyError, ValueError) as exc:
        print(f"INVALID: {exc}")
        return 1
    for note in notes:
        print(f"note: {note}")
    print("OK: the export is complete, unaltered and signed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
