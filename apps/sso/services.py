"""Writes of single sign-on: a tenant's provider settings, and sign-ins through it.

Linking (account takeover is the risk): an account at the provider is known by its (issuer,
subject) pair, stored in `SsoIdentity` at its first sign-in. Later sign-ins find the user by
that pair only, never by email. At the first sign-in, the verified email may link the account
to an existing user, but only to a user who is already a member of this tenant and has no
other account of this provider linked; otherwise a new user is created. So a provider (which a
tenant admin chooses) can never reach a user of another tenant, and an email address alone
never takes over an account that is already linked.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.core.errors import NotFound, ValidationFailed
from apps.core.roles import TENANT_ROLES
from apps.core.tenancy import Principal
from apps.sso import oidc
from apps.sso.errors import (
    InvalidProvider,
    PasswordsNeeded,
    ProviderUnreachable,
    SsoNotConfigured,
    SsoRefused,
)
from apps.sso.models import OidcProvider, SsoIdentity, SsoLogin
from apps.sso.sealing import secret_open, secret_seal
from apps.sso.selectors import provider_get
from apps.tenants.access import principal_for_user
from apps.tenants.models import Membership, Tenant
from apps.tenants.services import membership_assign

LOGIN_TTL = timedelta(minutes=10)
MAX_ROLE_MAP = 50
_DOMAIN_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789.-")


# --- settings -----------------------------------------------------------------------------


def _domains_check(domains: list[str]) -> list[str]:
    cleaned = sorted({d.strip().lower().lstrip("@") for d in domains if d.strip()})
    for domain in cleaned:
        if "." not in domain or not set(domain) <= _DOMAIN_CHARS or len(domain) > 253:
            raise InvalidProvider(f"{domain!r} is not a domain name.", code="invalid_domain")
    if not cleaned:
        raise InvalidProvider(
            "List at least one allowed email domain.", code="allowed_domains_required"
        )
    return cleaned


def _role_map_check(role_map: Any) -> dict[str, list[str]]:
    allowed = {str(r) for r in TENANT_ROLES}
    if not isinstance(role_map, dict) or not role_map or len(role_map) > MAX_ROLE_MAP:
        raise InvalidProvider(
            f"The role map maps 1 to {MAX_ROLE_MAP} claim values to roles.", code="invalid_role_map"
        )
    cleaned: dict[str, list[str]] = {}
    for value, roles in role_map.items():
        names = [roles] if isinstance(roles, str) else roles
        if (
            not isinstance(value, str)
            or not value.strip()
            or len(value) > 200
            or not isinstance(names, list)
            or not names
            or not all(isinstance(r, str) and r in allowed for r in names)
        ):
            raise InvalidProvider(
                f"Map claim values to one or more of {', '.join(sorted(allowed))}.",
                code="invalid_role_map",
            )
        cleaned[value.strip()] = sorted(set(names))
    return cleaned


def _settings_audit(provider: OidcProvider) -> dict[str, Any]:
    """What the audit log says of the settings: never the client secret."""
    return {
        "name": provider.name,
        "issuer": provider.issuer,
        "client_id": provider.client_id,
        "role_claim": provider.role_claim,
        "role_map": provider.role_map,
        "allowed_domains": provider.allowed_domains,
        "local_passwords": provider.local_passwords,
    }


def provider_set(
    *,
    tenant: Tenant,
    name: str,
    issuer: str,
    client_id: str,
    client_secret: str | None,
    role_claim: str,
    role_map: Any,
    allowed_domains: list[str],
    local_passwords: bool,
) -> OidcProvider:
    """Configure (or change) the tenant's provider. The issuer must answer discovery now; a
    blank `client_secret` keeps the stored one. Local passwords can be off only with a provider
    that works, so the settings are checked before they are saved."""
    if tenant.is_platform:
        raise ValidationFailed("Single sign-on is for tenants.", code="sso_not_for_platform")
    issuer = oidc.issuer_check(issuer)
    name, client_id, role_claim = name.strip(), client_id.strip(), role_claim.strip()
    if not name or not client_id or not role_claim:
        raise InvalidProvider("Name, client id and role claim are required.")
    role_map = _role_map_check(role_map)
    domains = _domains_check(allowed_domains)
    try:
        oidc.discover(issuer, fresh=True)
    except ProviderUnreachable as exc:
        raise InvalidProvider(
            f"The issuer does not answer OpenID Connect discovery: {exc.detail}",
            code="issuer_discovery_failed",
        ) from None
    with transaction.atomic():
        provider = OidcProvider.objects.select_for_update().filter(tenant=tenant).first()
        created = provider is None
        if provider is None:
            provider = OidcProvider(tenant=tenant)
        if not client_secret and (created or provider.issuer != issuer):
            raise InvalidProvider(
                "Give the client secret (a new provider or issuer needs one).",
                code="client_secret_required",
            )
        provider.name, provider.issuer, provider.client_id = name, issuer, client_id
        provider.role_claim, provider.role_map = role_claim, role_map
        provider.allowed_domains, provider.local_passwords = domains, local_passwords
        if client_secret:
            provider.client_secret = secret_seal(
                tenant_uid=tenant.uid, provider_uid=provider.uid, secret=client_secret
            )
        provider.save()
        details = _settings_audit(provider)
        details["created"] = created
        details["client_secret_changed"] = bool(client_secret)
        audit_record(
            action="sso.update",
            target=f"sso:{provider.uid}",
            details=details,
        )
    return provider


def provider_delete(*, tenant: Tenant) -> None:
    """Remove the provider (its linked identities go with it). Refused while local passwords
    are off: turn them on first, or nobody could sign in."""
    with transaction.atomic():
        provider = OidcProvider.objects.select_for_update().filter(tenant=tenant).first()
        if provider is None:
            raise NotFound("This tenant has no single sign-on provider.", code="sso_not_configured")
        if not provider.local_passwords:
            raise PasswordsNeeded(
                "Turn local passwords on before removing the provider: nobody could sign in."
            )
        SsoIdentity.objects.filter(tenant=tenant).delete()
        audit_record(action="sso.remove", target=f"sso:{provider.uid}", details={})
        provider.delete()


def local_passwords_set(*, tenant: Tenant, enabled: bool) -> OidcProvider:
    """Turn password sign-in on or off. The way back when the provider is lost:
    `manage.py sso_local_passwords <tenant> on` (README, Governance)."""
    with transaction.atomic():
        provider = OidcProvider.objects.select_for_update().filter(tenant=tenant).first()
        if provider is None:
            if enabled:
                raise SsoNotConfigured("Passwords are on: this tenant has no provider.")
            raise PasswordsNeeded("Configure single sign-on before turning local passwords off.")
        provider.local_passwords = enabled
        provider.save(update_fields=["local_passwords", "updated_at"])
        audit_record(
            action="sso.update",
            target=f"sso:{provider.uid}",
            details={"local_passwords": enabled},
        )
    return provider


# --- sign-in ------------------------------------------------------------------------------


def _digest(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


@dataclass(frozen=True)
class SignInStarted:
    url: str  # where the browser goes: the provider's authorization endpoint
    state: str  # what the browser keeps (a cookie) to prove it started this sign-in


def signin_start(*, tenant: Tenant, redirect_uri: str, next_url: str) -> SignInStarted:
    provider = provider_get(tenant=tenant)
    if provider is None:
        raise SsoNotConfigured()
    discovery = oidc.discover(provider.issuer)
    request = oidc.authorization_request(
        discovery, client_id=provider.client_id, redirect_uri=redirect_uri
    )
    SsoLogin.objects.filter(created_at__lt=timezone.now() - LOGIN_TTL).delete()
    SsoLogin.objects.create(
        tenant=tenant,
        state_digest=_digest(request.state),
        nonce=request.nonce,
        code_verifier=request.code_verifier,
        next_url=next_url[:500],
    )
    return SignInStarted(url=request.url, state=request.state)


@dataclass(frozen=True)
class SignedIn:
    user: User
    principal: Principal
    next_url: str
    email: str


def _login_take(*, tenant: Tenant, state: str, browser_state: str) -> SsoLogin:
    """The sign-in this callback answers, taken once: the state must be the one this browser
    started (its cookie), and a used or expired state is refused."""
    if not state or not browser_state or len(state) > 200:
        raise SsoRefused("This sign-in was not started in this browser.", code="state_mismatch")
    if not hmac.compare_digest(state.encode(), browser_state.encode()):
        raise SsoRefused("This sign-in was not started in this browser.", code="state_mismatch")
    with transaction.atomic():
        login = (
            SsoLogin.objects.select_for_update()
            .filter(tenant=tenant, state_digest=_digest(state))
            .first()
        )
        if login is None:
            raise SsoRefused("This sign-in was used or has expired.", code="state_unknown")
        login.delete()
    if login.created_at < timezone.now() - LOGIN_TTL:
        raise SsoRefused("This sign-in has expired; start again.", code="state_expired")
    return login


def _claim_values(claims: dict[str, Any], name: str) -> set[str]:
    value = claims.get(name)
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {v for v in value if isinstance(v, str)}
    return set()


def roles_mapped(*, provider: OidcProvider, claims: dict[str, Any]) -> list[str]:
    roles: set[str] = set()
    for value in _claim_values(claims, provider.role_claim):
        roles.update(provider.role_map.get(value, []))
    return sorted(roles)


def _email_of(provider: OidcProvider, claims: dict[str, Any]) -> str:
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email or len(email) > 254:
        raise SsoRefused("The provider gave no email address.", code="email_missing")
    if claims.get("email_verified") is not True:
        raise SsoRefused(
            "The provider has not verified this email address.", code="email_unverified"
        )
    email = email.strip().lower()
    if email.rsplit("@", 1)[1] not in provider.allowed_domains:
        raise SsoRefused(
            "Your email domain is not allowed to sign in to this tenant.", code="domain_not_allowed"
        )
    return email


def _username_for(email: str) -> str:
    candidate, n = email[:150], 1
    while User.objects.filter(username__iexact=candidate).exists():
        n += 1
        candidate = f"{email[:140]}-{n}"
    return candidate


def _user_for(*, tenant: Tenant, provider: OidcProvider, subject: str, email: str) -> User:
    """The user this provider account signs in as: linked by (issuer, subject), else (first
    sign-in) a member of this tenant with this verified email, else a new user."""
    identity = (
        SsoIdentity.objects.select_related("user")
        .filter(tenant=tenant, issuer=provider.issuer, subject=subject)
        .first()
    )
    if identity is not None:
        SsoIdentity.objects.filter(pk=identity.pk).update(last_login_at=timezone.now(), email=email)
        return identity.user
    members = Membership.objects.filter(tenant=tenant, user__email__iexact=email)
    candidates = [m.user for m in members.select_related("user")]
    if len(candidates) > 1:
        raise SsoRefused(
            "Several members have this email address; ask a tenant admin.", code="email_ambiguous"
        )
    user = candidates[0] if candidates else None
    if (
        user is not None
        and SsoIdentity.objects.filter(tenant=tenant, issuer=provider.issuer, user=user).exists()
    ):
        raise SsoRefused(
            "This email's member is linked to another account of the provider.",
            code="email_linked_elsewhere",
        )
    if user is None:
        user = User(username=_username_for(email), email=email)
        user.set_unusable_password()  # signs in through the provider only
        user.save()
    try:
        with transaction.atomic():
            SsoIdentity.objects.create(
                tenant=tenant,
                issuer=provider.issuer,
                subject=subject,
                user=user,
                email=email,
                last_login_at=timezone.now(),
            )
    except IntegrityError:
        raise SsoRefused(
            "This account was linked at the same time; try again.", code="link_race"
        ) from None
    audit_record(
        action="sso.link",
        target=user.username,
        details={"issuer": provider.issuer, "new": not candidates},
    )
    return user


def signin_complete(
    *,
    tenant: Tenant,
    state: str,
    browser_state: str,
    code: str,
    error: str,
    redirect_uri: str,
) -> SignedIn:
    """Check the provider's answer and establish the member: the ID token verified, the email
    verified and of an allowed domain, roles from the mapping (none: refused)."""
    login = _login_take(tenant=tenant, state=state, browser_state=browser_state)
    provider = provider_get(tenant=tenant)
    if provider is None:
        raise SsoNotConfigured()
    if error:
        raise SsoRefused("The provider did not sign you in.", code="provider_error")
    if not code or len(code) > 2000:
        raise SsoRefused("The provider sent no sign-in code.", code="code_missing")
    discovery = oidc.discover(provider.issuer)
    id_token = oidc.code_exchange(
        discovery,
        client_id=provider.client_id,
        client_secret=secret_open(
            tenant_uid=tenant.uid, provider_uid=provider.uid, sealed=bytes(provider.client_secret)
        ),
        code=code,
        code_verifier=login.code_verifier,
        redirect_uri=redirect_uri,
    )
    claims = oidc.id_token_verify(
        discovery, id_token=id_token, client_id=provider.client_id, nonce=login.nonce
    )
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject or len(subject) > 255:
        raise SsoRefused("The ID token's subject is not usable.", code="bad_id_token")
    email = _email_of(provider, claims)
    roles = roles_mapped(provider=provider, claims=claims)
    if not roles:
        raise SsoRefused(
            "Your account at the provider holds no role in this tenant.", code="no_mapped_role"
        )
    with transaction.atomic():
        user = _user_for(tenant=tenant, provider=provider, subject=subject, email=email)
        if not user.is_active:
            raise SsoRefused("This account is disabled.", code="user_inactive")
        membership_assign(tenant=tenant, user=user, roles=roles, source="sso")
    principal = principal_for_user(user, tenant)
    if principal is None:  # pragma: no cover - the membership was just set
        raise SsoRefused("No access to this tenant.", code="not_a_member")
    return SignedIn(user=user, principal=principal, next_url=login.next_url, email=email)
