"""API tokens: creating and revoking them, and keeping each within what its creator holds.

A token belongs to the member (or the token) that made it and never holds more: the member's
changes call `tokens_hold_no_more`, and revoking a token revokes every token it made.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.core.errors import NotFound, ValidationFailed
from apps.core.roles import TENANT_ROLES, Role
from apps.core.tenancy import Principal
from apps.tenants.access import TOKEN_PREFIX, digest_secret
from apps.tenants.grants import KeyGrant, grant_check, grant_for, grant_load
from apps.tenants.models import ApiToken, Tenant


def tokens_hold_no_more(
    *, tenant: Tenant, user_id: int, roles: Iterable[str], grant: KeyGrant | None
) -> list[str]:
    """A token holds no more than the member who created it: revoke the member's tokens in
    `tenant` whose role they no longer hold, or whose key grant is no longer within theirs,
    whenever they lose roles, grant or membership. Returns the revoked tokens' prefixes, for
    the caller's audit event."""
    held = set(roles)
    now = timezone.now()
    revoked = []
    live = ApiToken.objects.select_for_update().filter(
        tenant=tenant, created_by_id=user_id, revoked_at__isnull=True
    )
    for token in live:
        if token.role in held:
            token_grant = grant_load(token.key_grant)
            if token.role != Role.KEY_USER or (
                token_grant is not None and grant is not None and token_grant.within(grant)
            ):
                continue
        token.revoked_at = now
        token.save(update_fields=["revoked_at"])
        revoked.append(token.prefix)
    return revoked


def _token_expiry(expires_at: datetime | None) -> datetime:
    now = timezone.now()
    latest = now + timedelta(days=settings.KCM_TOKEN_MAX_LIFETIME_DAYS)
    if expires_at is None:
        return latest
    if expires_at <= now:
        raise ValidationFailed("The expiry must be in the future.", code="invalid_expiry")
    if expires_at > latest:
        raise ValidationFailed(
            f"A token lives at most {settings.KCM_TOKEN_MAX_LIFETIME_DAYS} days "
            "(KCM_TOKEN_MAX_LIFETIME_DAYS).",
            code="invalid_expiry",
        )
    return expires_at


def api_token_create(
    *,
    tenant: Tenant,
    name: str,
    role: str,
    created_by_id: int | None,
    expires_at: datetime | None = None,
    key_grant: KeyGrant | None = None,
    actor: Principal | None = None,
) -> tuple[ApiToken, str]:
    """Create a token; returns it with its plaintext, which is never available again.

    `actor` (the principal asking) must hold `role`, and a key_user token's grant (by default
    the actor's own) must be within the actor's grant. Without an actor the caller is trusted
    (a management command, a fixture): a key_user token then defaults to every key. The expiry
    defaults to, and may not exceed, KCM_TOKEN_MAX_LIFETIME_DAYS from now."""
    if role not in TENANT_ROLES and not (tenant.is_platform and role == Role.PLATFORM_OPERATOR):
        raise ValidationFailed("That role cannot be given to a token here.", code="invalid_role")
    name = name.strip()
    if not name or len(name) > 100:
        raise ValidationFailed("A token needs a name of 1-100 characters.", code="invalid_name")
    expires_at = _token_expiry(expires_at)
    grant = grant_for(roles=[role], given=key_grant, actor=actor)
    parent = None
    if actor is not None:
        grant_check(actor=actor, tenant=tenant, roles=[role], key_grant=grant)
        if actor.kind == "token" and actor.token_id is not None:
            # Made by a token: it belongs to that token's person and dies with that token.
            parent = ApiToken.objects.get(pk=actor.token_id)
            created_by_id = parent.created_by_id
            if parent.expires_at is not None:
                expires_at = min(expires_at, parent.expires_at)
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(
            tenant=tenant,
            name=name,
            role=role,
            key_grant=grant and grant.to_json(),
            prefix=prefix,
            digest=digest_secret(secret),
            created_by_id=created_by_id,
            parent=parent,
            expires_at=expires_at,
        )
        audit_record(
            action="token.create",
            target=prefix,
            details={
                "name": name,
                "role": role,
                "key_grant": token.key_grant,
                "expires_at": expires_at.isoformat(),
            },
        )
    return token, f"{TOKEN_PREFIX}_{prefix}_{secret}"


def api_token_revoke(*, tenant: Tenant, token_id: int) -> ApiToken:
    token = ApiToken.objects.filter(pk=token_id, tenant=tenant).first()
    if token is None:
        raise NotFound("No such API token.", code="token_not_found")
    if token.revoked_at is None:
        with transaction.atomic():
            now = timezone.now()
            token.revoked_at = now
            token.save(update_fields=["revoked_at"])
            made = _descendants(token)
            ApiToken.objects.filter(pk__in=made, revoked_at__isnull=True).update(revoked_at=now)
            details: dict[str, Any] = {"name": token.name}
            if made:
                details["revoked_tokens"] = list(
                    ApiToken.objects.filter(pk__in=made).values_list("prefix", flat=True)
                )
            audit_record(action="token.revoke", target=token.prefix, details=details)
    return token


def _descendants(token: ApiToken) -> list[int]:
    """The tokens `token` made, the tokens those made, and so on."""
    found: list[int] = []
    level = [token.pk]
    while level:
        level = list(ApiToken.objects.filter(parent_id__in=level).values_list("pk", flat=True))
        found.extend(level)
    return found
