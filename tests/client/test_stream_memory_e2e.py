"""1 GiB encrypted and decrypted as streams in constant memory, measured in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Kcm

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import hashlib, json, os, re, sys
from kcm_client import Client

SIZE, CHUNK = 1 << 30, 1 << 20
block = hashlib.sha256(b"seed").digest() * (CHUNK // 32)

class Source:
    '''1 GiB of data produced as it is read; never held.'''
    def __init__(self):
        self.left, self.digest = SIZE, hashlib.sha256()
    def read(self, n=-1):
        n = min(self.left, CHUNK if n < 0 else n)
        out = (block * (n // CHUNK + 1))[:n] if n > CHUNK else block[:n]
        self.left -= n
        self.digest.update(out)
        return out

class Sink:
    def __init__(self):
        self.size, self.digest = 0, hashlib.sha256()
    def write(self, data):
        self.size += len(data)
        self.digest.update(data)
        return len(data)

path = sys.argv[1]
with Client(os.environ["URL"], os.environ["TOKEN"], host_header=os.environ["HOST"]) as kcm:
    src = Source()
    with open(path, "wb") as out:
        kcm.encrypt_stream(src, out, service_key="payments", context={"file": "big"})
    sink = Sink()
    with open(path, "rb") as message:
        kcm.decrypt_stream(message, sink, context={"file": "big"})
print(json.dumps({
    "same": sink.digest.digest() == src.digest.digest() and sink.size == SIZE,
    "message_bytes": os.path.getsize(path),
    # VmHWM, not ru_maxrss: that one survives execve and would report pytest's own peak
    "peak_rss_mib": int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read())[1]) / 1024,
}))
"""


def test_a_gibibyte_streams_through_in_under_100_mib(kcm: Kcm, tmp_path: Path) -> None:
    env = {**os.environ, "URL": kcm.url, "HOST": kcm.host(kcm.acme),
           "TOKEN": kcm.acme.tokens["key_user"], "PYTHONPATH": str(REPO / "client")}  # fmt: skip
    target = tmp_path / "big.kcm"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(target)], env=env, capture_output=True, text=True,
        timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["same"]
    assert result["message_bytes"] > 1 << 30
    assert result["peak_rss_mib"] < 100, result
