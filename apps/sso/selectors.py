"""Reads of single sign-on settings."""

from __future__ import annotations

from apps.sso.models import OidcProvider
from apps.tenants.models import Tenant


def provider_get(*, tenant: Tenant) -> OidcProvider | None:
    if tenant.is_platform:
        return None  # operators sign in with passwords (and MFA), never a tenant's provider
    return OidcProvider.objects.filter(tenant=tenant).first()


def local_passwords_allowed(*, tenant: Tenant) -> bool:
    provider = provider_get(tenant=tenant)
    return provider is None or provider.local_passwords
