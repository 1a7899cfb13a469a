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

from kcm_client import errors  # noqa: E402
from kcm_client import message as kcm_message  # noqa: E402

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
    ("default frame size", kcm_message.DEFAULT_FRAME_SIZE, 100, {"purpose": "default"}),
]


def seal(
    index: int, frame_size: int, plaintext: bytes, context: dict[str, str], *, message: int = 0
) -> dict[str, Any]:
    """Vector `index`'s data key sealing its `message`-th message (the same header for all)."""
    data_key = _bytes(f"data key {index}", 32)
    header_nonce = bytes([0x80 | _bytes(f"header nonce {index}", 1)[0]]) + _bytes(
        f"header nonce {index}/rest", 11
    )
    nonce_base = bytes([0x7F & _bytes(f"nonce base {index}/{message}", 1)[0]]) + _bytes(
        f"nonce base {index}/{message}/rest", 11
    )
    envelope = _bytes(f"envelope {index}", 116)
    context_json = kcm_message.canonical_context(context)
    key = kcm_message.MessageKey(
        data_key, service_key="payments", envelope=envelope, context_json=context_json
    )
    lead, sealer = key.start(frame_size, header_nonce=header_nonce, nonce_base=nonce_base)
    return {
        "data_key_hex": data_key.hex(),
        "service_key": "payments",
        "envelope_hex": envelope.hex(),
        "context": context,
        "frame_size": frame_size,
        "header_nonce_hex": header_nonce.hex(),
        "nonce_base_hex": nonce_base.hex(),
        "plaintext_hex": plaintext.hex(),
        "message_hex": (lead + kcm_message.seal_all(sealer, plaintext)).hex(),
    }


def _flip(data: bytes, offset: int, bit: int = 0x01) -> bytes:
    return data[:offset] + bytes([data[offset] ^ bit]) + data[offset + 1 :]


def invalid(vector: dict[str, Any], other: dict[str, Any]) -> list[dict[str, Any]]:
    """Changed copies of a three-frame `vector`, each with the error code a reader gives
    (`other`: another message of the same data key)."""
    data = bytes.fromhex(vector["message_hex"])
    header = kcm_message.header_read(__import__("io").BytesIO(data).read)
    h = len(header.raw)
    f = h + 12  # the first frame, after the nonce base
    frame = 1 + 16 + 16  # a regular frame of 16 bytes
    other_data = bytes.fromhex(other["message_hex"])
    changes = {
        "magic": _flip(data, 0),
        "format version": _flip(data, 4, 0x10),
        "algorithm": _flip(data, 6, 0x10),
        "frame size": _flip(data, 10),
        "header nonce": _flip(data, 22),
        "header nonce top bit": _flip(data, 11, 0x80),
        "context": data[: h - 16 - 3] + b"X" + data[h - 16 - 2 :],
        "header tag": _flip(data, h - 1),
        "nonce base": _flip(data, h + 5),
        "nonce base top bit": _flip(data, h, 0x80),
        "frame 0 type": _flip(data, f),
        "frame 1 ciphertext": _flip(data, f + frame + 3),
        "frame 1 tag": _flip(data, f + 2 * frame - 1),
        "final frame length": _flip(data, f + 2 * frame + 4),
        "final frame tag": _flip(data, len(data) - 1),
        "frames 0 and 1 swapped": data[:f] + data[f + frame : f + 2 * frame]
        + data[f : f + frame] + data[f + 2 * frame :],
        "frame 1 from another message of the key": data[: f + frame]
        + other_data[f + frame : f + 2 * frame] + data[f + 2 * frame :],
        "another message's nonce base": data[:h] + other_data[h:f] + data[f:],
        "cut after the header": data[:h],
        "cut after the nonce base": data[:f],
        "cut after frame 0": data[: f + frame],
        "cut after frame 1": data[: f + 2 * frame],
        "cut inside the final frame": data[:-1],
        "byte after the final frame": data + b"\x00",
    }  # fmt: skip
    out = []
    key = bytes.fromhex(vector["data_key_hex"])
    for name, changed in changes.items():
        try:
            kcm_message.open_with_key(changed, key)
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
    index = vectors.index(three)
    other = seal(index, 16, _bytes("other plaintext", 48), three["context"], message=1)
    return {
        "format": kcm_message.FORMAT_VERSION,
        "vectors": vectors,
        "invalid": invalid(three, other),
    }


def main() -> None:
    text = json.dumps(build(), indent=1, ensure_ascii=False) + "\n"
    if "--check" in sys.argv:
        sys.exit(0 if OUT.read_text() == text else "docs/message-vectors.json is out of date")
    OUT.write_text(text)


if __name__ == "__main__":
    main()
