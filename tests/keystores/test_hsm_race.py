"""Two processes on one SoftHSM2 token: a key one creates is usable in the other, even after
that other created an object of its own.

SoftHSM2's file object store keeps a per-process index of a token's objects, refreshed when the
token's generation counter on disk differs from the one the process last recorded. A process
that creates an object bumps the counter and records the new value without re-reading the
folder, so an object another process created just before stays invisible to it (C_FindObjects
does not return it) until someone else changes the token or the library is re-initialised.

Each process is a fresh interpreter driving the product's `Pkcs11Keystore` on a scratch token in
tmp_path (its own SOFTHSM2_CONF), through JSON lines on stdin/stdout.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

pytestmark = pytest.mark.skipif(
    shutil.which("softhsm2-util") is None or not Path(settings.KCM_PKCS11_LIBRARY).exists(),
    reason="needs SoftHSM2",
)

AAD = b"kcm:test:hsm-race"

WORKER = textwrap.dedent(
    """
    import json, sys
    from apps.keystores.pkcs11.keystore import Pkcs11Keystore

    keystore = Pkcs11Keystore(
        library=sys.argv[1], token_label=sys.argv[2], pin=sys.argv[3], timeout=10
    )
    for line in sys.stdin:
        op, args = json.loads(line)
        try:
            if op == "login":
                result = keystore.health()["ok"]
            elif op == "create":
                result = keystore.create_root_key(label=args[0])
            elif op == "destroy":
                result = keystore.destroy(args[0])
            elif op == "encrypt":
                result = keystore.encrypt(args[0], bytes.fromhex(args[1]), bytes.fromhex(args[2])).hex()
            elif op == "decrypt":
                result = keystore.decrypt(args[0], bytes.fromhex(args[1]), bytes.fromhex(args[2])).hex()
            reply = {"ok": result}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)
    """
)


class Worker:
    """One process with its own `Pkcs11Keystore`, logged in once and kept alive."""

    def __init__(self, token: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER, token["library"], token["label"], token["pin"]],
            cwd=settings.BASE_DIR,
            env={**os.environ, "SOFTHSM2_CONF": token["conf"]},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def call(self, op: str, *args: str) -> Any:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps([op, list(args)]) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, f"worker exited ({self.process.poll()})"
        reply = json.loads(line)
        assert "error" not in reply, f"{op} failed in pid {self.process.pid}: {reply['error']}"
        return reply["ok"]

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def token(tmp_path: Path) -> dict[str, str]:
    """A scratch SoftHSM2 token of the file backend, seen only through its own config."""
    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tmp_path / 'tokens'}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
    )
    label, pin = f"race-{secrets.token_hex(4)}", secrets.token_hex(8)
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label,
         "--pin", pin, "--so-pin", secrets.token_hex(8)],
        env={**os.environ, "SOFTHSM2_CONF": str(conf)}, check=True, capture_output=True,
    )  # fmt: skip
    return {"conf": str(conf), "label": label, "pin": pin, "library": settings.KCM_PKCS11_LIBRARY}


@pytest.fixture
def workers(token: dict[str, str]) -> Iterator[tuple[Worker, Worker]]:
    a, b = Worker(token), Worker(token)
    try:
        # Both log in (and index the token) before either creates anything.
        assert a.call("login") is True
        assert b.call("login") is True
        yield a, b
    finally:
        a.close()
        b.close()


def _round_trip(user: Worker, owner: Worker, handle: str) -> None:
    plaintext = secrets.token_bytes(32)
    blob = user.call("encrypt", handle, plaintext.hex(), AAD.hex())
    assert owner.call("decrypt", handle, blob, AAD.hex()) == plaintext.hex()
    blob = owner.call("encrypt", handle, plaintext.hex(), AAD.hex())
    assert user.call("decrypt", handle, blob, AAD.hex()) == plaintext.hex()


def test_a_key_another_process_created_is_usable_after_creating_one_of_our_own(
    workers: tuple[Worker, Worker],
) -> None:
    a, b = workers
    theirs = b.call("create", "kcm-test-race-b")
    a.call("create", "kcm-test-race-a")  # bumps the token generation without re-indexing

    _round_trip(a, b, theirs)


def test_the_loser_of_a_creation_race_can_use_the_winners_key(
    workers: tuple[Worker, Worker],
) -> None:
    # Two workers create the same platform key at once; the second one loses (the database
    # keeps the first handle), destroys its own copy and must use the winner's.
    winner, loser = workers
    kept = winner.call("create", "kcm-test-race-winner")
    dropped = loser.call("create", "kcm-test-race-loser")
    loser.call("destroy", dropped)

    _round_trip(loser, winner, kept)
