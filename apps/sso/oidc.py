"""The OpenID Connect relying party: discovery, the authorization request (code flow with
PKCE S256, state and nonce) and the ID token's verification against the provider's JWKS.

authlib makes the PKCE challenge and the random values; joserfc (authlib's JOSE library)
verifies the ID token's signature and its iss, aud, exp, iat and nonce claims. HTTP goes
through httpx with short timeouts; nothing here logs a token, a code or the client secret.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from django.conf import settings
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from apps.sso.errors import InvalidProvider, ProviderUnreachable, SsoRefused

TIMEOUT = httpx.Timeout(5.0)
# Algorithms an ID token may be signed with: asymmetric only (HS256 would make the client
# secret a signing key, and "none" is no signature).
ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"]
CLOCK_LEEWAY = 60  # seconds of clock skew tolerated on exp and iat

_discovery_cache: dict[str, tuple[float, Discovery]] = {}
DISCOVERY_TTL = 300.0


@dataclass(frozen=True)
class Discovery:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


def issuer_check(issuer: str) -> str:
    """The issuer as stored: an https URL without query or fragment (http only when
    KCM_SSO_ALLOW_HTTP is on, for development and tests)."""
    parts = urlsplit(issuer.strip())
    allowed = {"https", "http"} if settings.KCM_SSO_ALLOW_HTTP else {"https"}
    if parts.scheme not in allowed or not parts.hostname or parts.query or parts.fragment:
        raise InvalidProvider(
            "The issuer must be an https URL without query or fragment.", code="invalid_issuer"
        )
    return issuer.strip()


def _get_json(url: str, what: str) -> dict[str, Any]:
    try:
        answer = httpx.get(url, timeout=TIMEOUT, follow_redirects=False)
        answer.raise_for_status()
        body = answer.json()
    except (httpx.HTTPError, ValueError):
        raise ProviderUnreachable(f"The provider's {what} could not be read.") from None
    if not isinstance(body, dict):
        raise ProviderUnreachable(f"The provider's {what} is not a JSON object.")
    return body


def discover(issuer: str, *, fresh: bool = False) -> Discovery:
    """The provider's endpoints from <issuer>/.well-known/openid-configuration; its `issuer`
    must be exactly the configured one (OpenID Connect Discovery 1.0, section 4.3)."""
    cached = _discovery_cache.get(issuer)
    if cached is not None and not fresh and cached[0] > time.monotonic():
        return cached[1]
    doc = _get_json(issuer.rstrip("/") + "/.well-known/openid-configuration", "discovery document")
    if doc.get("issuer") != issuer:
        raise ProviderUnreachable("The provider's discovery document names another issuer.")
    try:
        found = Discovery(
            issuer=issuer,
            authorization_endpoint=str(doc["authorization_endpoint"]),
            token_endpoint=str(doc["token_endpoint"]),
            jwks_uri=str(doc["jwks_uri"]),
        )
    except KeyError:
        raise ProviderUnreachable("The provider's discovery document lacks an endpoint.") from None
    _discovery_cache[issuer] = (time.monotonic() + DISCOVERY_TTL, found)
    return found


@dataclass(frozen=True)
class AuthorizationRequest:
    url: str
    state: str
    nonce: str
    code_verifier: str


def authorization_request(
    discovery: Discovery, *, client_id: str, redirect_uri: str
) -> AuthorizationRequest:
    """Where to send the browser: a fresh state, nonce and PKCE verifier (S256)."""
    state, nonce, verifier = generate_token(43), generate_token(43), generate_token(64)
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": "openid email profile",
            "state": state,
            "nonce": nonce,
            "code_challenge": create_s256_code_challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    sep = "&" if "?" in discovery.authorization_endpoint else "?"
    return AuthorizationRequest(
        url=f"{discovery.authorization_endpoint}{sep}{query}",
        state=state,
        nonce=nonce,
        code_verifier=verifier,
    )


def code_exchange(
    discovery: Discovery,
    *,
    client_id: str,
    client_secret: str,
    code: str,
    code_verifier: str,
    redirect_uri: str,
) -> str:
    """The ID token the token endpoint gives for `code` (client_secret_basic)."""
    try:
        answer = httpx.post(
            discovery.token_endpoint,
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": code_verifier,
            },
            auth=(client_id, client_secret),
            headers={"Accept": "application/json"},
            timeout=TIMEOUT,
            follow_redirects=False,
        )
    except httpx.HTTPError:
        raise ProviderUnreachable("The provider's token endpoint did not answer.") from None
    if answer.status_code in (400, 401):
        # invalid_grant (a used or foreign code, a wrong verifier) or a rejected client.
        raise SsoRefused("The provider refused the sign-in code.", code="code_rejected")
    try:
        answer.raise_for_status()
        id_token = answer.json().get("id_token")
    except (httpx.HTTPError, ValueError, AttributeError):
        raise ProviderUnreachable("The provider's token endpoint answered badly.") from None
    if not isinstance(id_token, str) or not id_token:
        raise SsoRefused("The provider gave no ID token.", code="id_token_missing")
    return id_token


def _jwks(discovery: Discovery) -> KeySet:
    try:
        return KeySet.import_key_set(_get_json(discovery.jwks_uri, "key set"))  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError):
        raise ProviderUnreachable("The provider's key set is not valid.") from None


def id_token_verify(
    discovery: Discovery, *, id_token: str, client_id: str, nonce: str
) -> dict[str, Any]:
    """The ID token's claims once its signature verifies with a key of the provider's JWKS
    and iss, aud (and azp), exp, iat and nonce are right; else `SsoRefused`."""
    keys = _jwks(discovery)
    try:
        token = jwt.decode(id_token, keys, algorithms=ID_TOKEN_ALGORITHMS)
    except JoseError:
        raise SsoRefused(
            "The ID token's signature does not verify.", code="bad_signature"
        ) from None
    except ValueError:
        raise SsoRefused("The ID token is malformed.", code="bad_id_token") from None
    claims = dict(token.claims)
    registry = jwt.JWTClaimsRegistry(
        leeway=CLOCK_LEEWAY,
        iss={"essential": True, "value": discovery.issuer},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
    )
    try:
        registry.validate(claims)
    except JoseError as exc:
        name = getattr(exc, "claim", "") or ""
        code = {"iss": "wrong_issuer", "exp": "id_token_expired"}.get(name, "bad_id_token")
        if exc.error == "expired_token":
            code = "id_token_expired"
        raise SsoRefused(f"The ID token is not acceptable ({code}).", code=code) from None
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(audiences, list) or client_id not in audiences:
        raise SsoRefused("The ID token is for another client.", code="wrong_audience")
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise SsoRefused("The ID token is for another client.", code="wrong_audience")
    if not isinstance(claims.get("nonce"), str) or claims["nonce"] != nonce:
        raise SsoRefused("The ID token's nonce is not this sign-in's.", code="nonce_mismatch")
    return claims
