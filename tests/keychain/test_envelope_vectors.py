"""The published vectors (docs/envelope-vectors.json) through KCM's request path: `datakeys.run`
and `run_batch`, which the API's views call, with the service key built as the key chain builds
it (tools/envelope_vectors.py) in place of the database and HSM, and the vector's nonce and data
key in place of fresh random ones."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from apps.core.errors import KcmError
from apps.keychain import datakeys
from tools import envelope_vectors as tool

DOC = json.loads(tool.PATH.read_text(encoding="utf-8"))
VECTORS, INVALID = DOC["vectors"], DOC["invalid"]


def _b64(hex_text: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_text)).decode()


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_kcm_opens_the_vector(vector: dict[str, Any]) -> None:
    item = {"ciphertext": vector["envelope_b64"], "context": vector["context"]}
    opened = tool.request(tool.opener(vector), tool.OPERATIONS[vector["kind"]], item)
    assert opened == {"plaintext": _b64(vector["plaintext_hex"]), "key_version": vector["version"]}


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_kcm_seals_the_vector_byte_for_byte(vector: dict[str, Any]) -> None:
    fixed = {"nonce": bytes.fromhex(vector["nonce_hex"])}
    context = vector["context"]
    if vector["kind"] == 1:
        fixed["data_key"] = bytes.fromhex(vector["plaintext_hex"])
        operation, item = "generate-data-key", {"context": context}
    else:
        operation, item = (
            "encrypt",
            {"context": context, "plaintext": _b64(vector["plaintext_hex"])},
        )
    made = tool.request(tool.opener(vector), operation, item, **fixed)
    assert made["ciphertext"] == vector["envelope_b64"]
    assert made["key_version"] == vector["version"]
    # rewrap opens and seals again: under the same version with the same nonce, nothing changes
    item = {"ciphertext": vector["envelope_b64"], "context": context}
    rewrapped = tool.request(tool.opener(vector), "rewrap", item, nonce=fixed["nonce"])
    assert rewrapped == {
        "ciphertext": vector["envelope_b64"],
        "key_version": vector["version"],
        "previous_version": vector["version"],
    }


@pytest.mark.parametrize("vector", INVALID, ids=[v["name"] for v in INVALID])
def test_kcm_refuses_the_invalid_vector_with_its_code(vector: dict[str, Any]) -> None:
    loaded = tool.opener(vector)
    operation = tool.OPERATIONS[vector["kind"]]
    item = {"ciphertext": vector["envelope_b64"], "context": vector["context"]}
    with pytest.raises(KcmError) as refused:
        tool.request(loaded, operation, item)
    assert refused.value.code == vector["error"]
    with tool.serving(loaded):
        [result] = datakeys.run_batch(service_key=loaded.name, operation=operation, items=[item])
    assert result["ok"] is False and result["error"]["code"] == vector["error"]


def test_regenerating_the_vectors_gives_the_published_file() -> None:
    assert tool.render() == tool.PATH.read_text(encoding="utf-8")
