"""Write docs/message-vectors.json: test vectors of the KCM message format
(docs/message-format.md), deterministic, made with kcm_client's own functions.

    .venv/bin/python -m tools.message_vectors [--check]
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "client"))

from kcm_client import errors, message  # noqa: E402

OUT = REPO / "docs" / "message-vectors.json"


def _bytes(label: str, size: int) -> bytes:
    """Fixed 'random' bytes: SHA-256 of a label, repeated."""
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{label}/{counter}".encode()).digest()
        counter += 1
    return out[:size]


CASES: list[tuple[str, int, int, dict[str, str]]] = [
    # (name, frame size, plaintext length, context)
    ("empty", 16, 0, {}),
    ("one byte", 16, 1, {"purpose": "vectors"}),
    ("one frame less one", 16, 15, {"purpose": "vectors"}),
    ("exactly one frame", 16, 16, {"purpose": "vectors"}),
    ("one frame and one byte", 16, 17, {"purpose": "vectors"}),
    ("three whole frames", 16, 48, {"record": "invoice-42", "tenant": "acme"}),
    ("non-ASCII context", 32, 70, {"zoë": "Ωmega ✓", "\U0001f511": "key", "ﬀ": '\t\n"\\'}),
    ("default frame size", message.DEFAULT_FRAME_SIZE, 100, {"purpose": "default"}),
]


def seal(index: int, frame_size: int, plaintext: bytes, context: dict[str, str]) -> dict[str, Any]:
    data_key = _bytes(f"data key {index}", 32)
    message_id = _bytes(f"message id {index}", 32)
    nonce_base = _bytes(f"nonce base {index}", 12)
    envelope = _bytes(f"envelope {index}", 116)
    context_json = message.canonical_context(context)
    key = message.MessageKey(
        data_key, service_key="payments", envelope=envelope, context_json=context_json
    )
    header, sealer = key.start(frame_size, message_id, nonce_base)
    return {
        "data_key_hex": data_key.hex(),
        "service_key": "payments",
        "envelope_hex": envelope.hex(),
        "context": context,
        "frame_size": frame_size,
        "message_id_hex": message_id.hex(),
        "nonce_base_hex": nonce_base.hex(),
        "plaintext_hex": plaintext.hex(),
        "message_hex": (header + message.seal_all(sealer, plaintext)).hex(),
    }


def _flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


def invalid(vector: dict[str, Any], other: dict[str, Any]) -> list[dict[str, Any]]:
    """Changed copies of a three-frame `vector`, each with the error code a reader gives."""
    data = bytes.fromhex(vector["message_hex"])
    header = message.header_read(__import__("io").BytesIO(data).read)
    h = len(header.raw)
    frame = 1 + 16 + 16  # a regular frame of 16 bytes
    other_data = bytes.fromhex(other["message_hex"])
    changes = {
        "magic": _flip(data, 0),
        "format version": _flip(data, 4),
        "algorithm": _flip(data, 6),
        "frame size": _flip(data, 10),
        "message id": _flip(data, 20),
        "nonce base": _flip(data, 50),
        "context": data[: h - 16 - 3] + b"X" + data[h - 16 - 2 :],
        "header tag": _flip(data, h - 1),
        "frame 0 type": _flip(data, h),
        "frame 1 ciphertext": _flip(data, h + frame + 3),
        "frame 1 tag": _flip(data, h + 2 * frame - 1),
        "final frame length": _flip(data, h + 2 * frame + 4),
        "final frame tag": _flip(data, len(data) - 1),
        "frames 0 and 1 swapped": data[:h] + data[h + frame : h + 2 * frame]
        + data[h : h + frame] + data[h + 2 * frame :],
        "frame 1 from another message": data[: h + frame]
        + other_data[h + frame : h + 2 * frame] + data[h + 2 * frame :],
        "cut after the header": data[:h],
        "cut after frame 0": data[: h + frame],
        "cut after frame 1": data[: h + 2 * frame],
        "cut inside the final frame": data[:-1],
        "byte after the final frame": data + b"\x00",
    }  # fmt: skip
    out = []
    key = bytes.fromhex(vector["data_key_hex"])
    for name, changed in changes.items():
        try:
            message.open_with_key(changed, key)
        except errors.KcmError as exc:
            out.append({"change": name, "data_key_hex": key.hex(), "message_hex": changed.hex(),
                        "error": exc.code})  # fmt: skip
        else:
            raise AssertionError(f"{name}: a changed message opened")
    return out


def build() -> dict[str, Any]:
    vectors = []
    for index, (name, frame_size, length, context) in enumerate(CASES):
        plaintext = _bytes(f"plaintext {index}", length)
        vectors.append({"name": name, **seal(index, frame_size, plaintext, context)})
    three = next(v for v in vectors if v["name"] == "three whole frames")
    other = seal(100, 16, _bytes("other plaintext", 48), three["context"])
    return {"format": message.FORMAT_VERSION, "vectors": vectors, "invalid": invalid(three, other)}


def main() -> None:
    text = json.dumps(build(), indent=1, ensure_ascii=False) + "\n"
    if "--check" in sys.argv:
        sys.exit(0 if OUT.read_text() == text else "docs/message-vectors.json is out of date")
    OUT.write_text(text)


if __name__ == "__main__":
    main()
