"""Who is asking, and in which role: one `Principal` for console sessions and API tokens."""

from __future__ import annotations

import hashlib
import hmac
from typing import cast

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection
from django.utils import timezone

from apps.core.roles import Role
from apps.core.tenancy import Principal
from apps.tenants.grants import grant_load
from apps.tenants.models import ApiToken, Membership, Tenant

TOKEN_PREFIX = "kcm"


def current_tenant() -> Tenant:
    """The tenant of the current request or task (django-tenants sets it on the connection)."""
    return cast(Tenant, connection.tenant)  # type: ignore[attr-defined]


def digest_secret(secret: str) -> str:
    # The secret carries 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(raw: str) -> tuple[str, str] | None:
    parts = raw.split("_", 2)  # the secret itself may contain "_"
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def principal_for_token(raw: str) -> Principal | None:
    """The principal of a usable token, or None (unknown, wrong secret, expired, revoked)."""
    parsed = parse_token(raw)
    if parsed is None:
        return None
    prefix, secret = parsed
    token = ApiToken.objects.filter(prefix=prefix).first()
    if token is None or not hmac.compare_digest(token.digest, digest_secret(secret)):
        return None
    now = timezone.now()
    if not token.is_usable(now):
        return None
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        # Coarse on purpose: one write a minute per token, not one per request.
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return Principal(
        kind="token",
        id=token.pk,
        label=token.prefix,
        roles=frozenset({token.role}),
        tenant_id=token.tenant_id,
        token_id=token.pk,
        key_grant=grant_load(token.key_grant) if token.role == Role.KEY_USER else None,
    )


def principal_for_user(user: AbstractBaseUser | AnonymousUser, tenant: Tenant) -> Principal | None:
    """The principal of a logged-in user in `tenant`, or None if they are not a member."""
    if not user.is_authenticated or not user.is_active:
        return None
    membership = Membership.objects.filter(user_id=user.pk, tenant_id=tenant.pk).first()
    if membership is None:
        return None
    return Principal(
        kind="user",
        id=user.pk,
        label=user.get_username(),
        roles=frozenset(membership.roles),
        tenant_id=tenant.pk,
        user_id=user.pk,
        key_grant=grant_load(membership.key_grant) if Role.KEY_USER in membership.roles else None,
    )


def person_of(principal: Principal) -> int | None:
    """The person behind a principal: the user, or for an API token the user who created it
    (a token made with a token belongs to its parent's person). None for the system."""
    if principal.user_id is not None:
        return principal.user_id
    if principal.kind == "token" and principal.token_id is not None:
        rows = ApiToken.objects.filter(pk=principal.token_id)
        return rows.values_list("created_by_id", flat=True).first()
    return None
