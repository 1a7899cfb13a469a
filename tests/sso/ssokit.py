"""Sign-in through a tenant's provider with Django's test client: the real views, cookies
and provider (idpkit) over HTTP."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
from django.test import Client
from django_tenants.utils import tenant_context

from apps.sso import services
from apps.sso.models import OidcProvider
from apps.tenants.models import Tenant
from tests.helpers import host_of
from tests.sso.idpkit import CLIENT_ID, CLIENT_SECRET, Idp

ROLE_MAP = {"kcm-admins": ["tenant_admin"], "kcm-keys": ["key_admin"], "kcm-audit": ["auditor"]}


def configure(tenant: Tenant, idp: Idp, **changes: Any) -> OidcProvider:
    settings: dict[str, Any] = {
        "name": "Test IdP",
        "issuer": idp.issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "role_claim": "groups",
        "role_map": ROLE_MAP,
        "allowed_domains": ["example.com"],
        "local_passwords": True,
        **changes,
    }
    with tenant_context(tenant):
        return services.provider_set(tenant=tenant, **settings)


def person(sub: str = "alice-sub", email: str = "alice@example.com", **claims: Any) -> dict:
    return {"sub": sub, "email": email, "email_verified": True, "groups": ["kcm-keys"], **claims}


def start(client: Client, slug: str, next_url: str = "") -> str:
    """Follow the sign-in button; the provider's authorization URL."""
    answer = client.get(
        "/sso/login/", {"next": next_url} if next_url else {}, HTTP_HOST=host_of(slug)
    )
    assert answer.status_code == 302, answer.content[:300]
    return answer["Location"]


def at_provider(url: str) -> str:
    """What the provider sends the browser back to: the callback's path and query."""
    answer = httpx.get(url, follow_redirects=False)
    assert answer.status_code == 302, answer.text[:300]
    back = urlsplit(answer.headers["Location"])
    return f"{back.path}?{back.query}"


def sign_in(client: Client, slug: str, next_url: str = "") -> Any:
    callback = at_provider(start(client, slug, next_url))
    return client.get(callback, HTTP_HOST=host_of(slug))


def signed_in_as(client: Client, slug: str) -> str | None:
    """Whose session the client holds on `slug`'s host (None: not signed in there)."""
    answer = client.get("/api/v1/me/", HTTP_HOST=host_of(slug))
    if answer.status_code != 200:
        return None
    return answer.json()["label"]
