"""A small OpenID Connect provider in a thread, for tests driving Django's test client: real
HTTP for discovery, JWKS and the token endpoint, real RS256 ID tokens, PKCE checked. A test
chooses who signs in (`idp.person`) and may make the provider misbehave (`idp.tamper`): sign
with a key not in its JWKS, name another issuer or audience, expire the token, change the
nonce. The browser end-to-end test uses a real provider instead (tests/e2e/oidc/)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

CLIENT_ID = "kcm-test"
CLIENT_SECRET = "s3cret-of-the-test-client-0123456789"


@dataclass
class Grant:
    claims: dict[str, Any]
    nonce: str
    challenge: str
    redirect_uri: str


@dataclass
class Idp:
    issuer: str = ""
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"}))
    person: dict[str, Any] = field(default_factory=dict)
    tamper: dict[str, Any] = field(default_factory=dict)
    codes: dict[str, Grant] = field(default_factory=dict)
    token_calls: int = 0

    def id_token(self, grant: Grant) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": grant.nonce,
            **grant.claims,
        }
        claims.update(self.tamper.get("claims", {}))
        key = self.tamper.get("key", self.key)
        return jwt.encode({"alg": "RS256", "kid": "k1"}, claims, key)


def _handler(idp: Idp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _json(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/.well-known/openid-configuration":
                self._json(
                    200,
                    {
                        "issuer": idp.tamper.get("discovered_issuer", idp.issuer),
                        "authorization_endpoint": f"{idp.issuer}/authorize",
                        "token_endpoint": f"{idp.issuer}/token",
                        "jwks_uri": f"{idp.issuer}/jwks",
                    },
                )
            elif url.path == "/jwks":
                self._json(200, KeySet([idp.key]).as_dict(private=False))
            elif url.path == "/authorize":
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                code = secrets.token_urlsafe(24)
                idp.codes[code] = Grant(
                    claims=dict(idp.person),
                    nonce=q["nonce"],
                    challenge=q["code_challenge"],
                    redirect_uri=q["redirect_uri"],
                )
                back = q["redirect_uri"] + "?" + urlencode({"code": code, "state": q["state"]})
                self.send_response(302)
                self.send_header("Location", back)
                self.end_headers()
            else:
                self._json(404, {})

        def do_POST(self) -> None:
            idp.token_calls += 1
            length = int(self.headers.get("Content-Length", 0))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self._json(401, {"error": "invalid_client"})
                return
            grant = idp.codes.pop(form.get("code", ""), None)
            verifier = form.get("code_verifier", "")
            challenge = (
                base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
                .rstrip(b"=")
                .decode()
            )
            if (
                grant is None
                or grant.challenge != challenge
                or grant.redirect_uri != form.get("redirect_uri")
            ):
                self._json(400, {"error": "invalid_grant"})
                return
            self._json(
                200, {"access_token": "at", "token_type": "Bearer", "id_token": idp.id_token(grant)}
            )

    return Handler


@contextmanager
def running_idp() -> Iterator[Idp]:
    idp = Idp()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(idp))
    idp.issuer = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield idp
    finally:
        server.shutdown()
        server.server_close()
