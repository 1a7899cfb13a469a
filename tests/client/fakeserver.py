"""A stand-in for KCM's data-key API, for client tests that do not need the real server:
data keys are random and their "envelope" is an opaque id that this fake remembers."""

from __future__ import annotations

import base64
import json
import os

import httpx


class FakeKcm:
    def __init__(self) -> None:
        self.keys: dict[bytes, tuple[bytes, str]] = {}  # envelope -> (data key, context json)
        self.calls = 0
        self.refuse: str | None = None  # a problem code to answer every call with

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.refuse:
            return httpx.Response(400, json={"code": self.refuse, "detail": "refused"})
        body = json.loads(request.content or b"{}")
        ctx = json.dumps(body.get("context", {}), sort_keys=True)
        if request.url.path.endswith("/generate-data-key/"):
            key, envelope = os.urandom(32), os.urandom(116)
            self.keys[envelope] = (key, ctx)
            return httpx.Response(200, json={"plaintext": _b(key), "ciphertext": _b(envelope)})
        if request.url.path.endswith("/decrypt-data-key/"):
            key, want = self.keys.get(base64.b64decode(body["ciphertext"]), (b"", ""))
            if not key:
                return httpx.Response(400, json={"code": "ciphertext_invalid"})
            if want != ctx:
                return httpx.Response(400, json={"code": "context_mismatch"})
            return httpx.Response(200, json={"plaintext": _b(key)})
        return httpx.Response(404, json={"code": "not_found"})

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)


def _b(data: bytes) -> str:
    return base64.b64encode(data).decode()
