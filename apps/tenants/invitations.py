"""Invitations: the only way into a tenant. Services (writes) and selectors (reads), shared by
the console, the API and `manage.py kcm_tenant invite`.

An inviter offers roles (and, for a key user, a key grant) no broader than their own
(`grants.grant_check`); a platform operator may invite the first administrators of a tenant
that has none. The invitation is a link carrying a 256-bit secret, of which only a SHA-256
digest is stored: shown once, usable once, until it expires or is revoked. Whoever opens it
signs in or creates their own account (the inviter never sets a password) and becomes a
member. A link is looked up in the tenant of the host it was opened on only, and every way a
link can fail (unknown, other tenant's, expired, revoked, used, or its inviter no longer holds
what it offers) answers the same `invitation_invalid`, so a link reveals nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django_tenants.utils import tenant_context

from apps.audit.services import audit_record
from apps.core.approvals import action_gated
from apps.core.errors import Conflict, Forbidden, KcmError, NotFound, ValidationFailed
from apps.core.roles import TENANT_ROLES, Role
from apps.core.tenancy import Principal
from apps.tenants.access import digest_secret, person_of
from apps.tenants.grants import KeyGrant, grant_check, grant_load, grant_of, tenant_has_admin
from apps.tenants.models import ApiToken, Invitation, Membership, Tenant, TenantStatus
from apps.tenants.selectors import tenant_primary_domain
from apps.tenants.services import user_create

PATH = "/invitations/{secret}/"


class InvitationInvalid(KcmError):
    """One answer for every link that does not work, whatever the reason."""

    status = 404
    code = "invitation_invalid"
    title = "This invitation link is not valid"
    default_detail = (
        "This invitation link is not valid: it may have expired, been used or been revoked. "
        "Ask whoever invited you for a new one."
    )

    def __init__(self) -> None:
        super().__init__(self.default_detail)


# --- selectors ---------------------------------------------------------------------------


def invitation_list_pending(*, tenant: Tenant, actor: Principal) -> QuerySet[Invitation]:
    """Pending invitations of `tenant`, newest first, that the actor may see: all of them for
    its tenant admins; for a platform operator those of the platform (its operators' and the
    command line's), not the tenant's own; for other members those they sent."""
    return (
        _visible(actor, tenant)
        .filter(accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now())
        .order_by("-created_at", "-pk")
    )


def invitation_pending_get(*, tenant: Tenant, secret: str) -> Invitation:
    """The pending invitation of `tenant` that `secret` opens; InvitationInvalid otherwise."""
    invitation = _by_secret(Invitation.objects.all(), tenant=tenant, secret=secret)
    if invitation is None or not _usable(invitation):
        raise InvitationInvalid()
    return invitation


def invitation_link(*, tenant: Tenant, secret: str, scheme: str = "https", port: str = "") -> str:
    """The link to send: on the tenant's own host, where the invitee will work."""
    domain = tenant_primary_domain(tenant=tenant)
    if domain is None:
        raise Conflict(f"Tenant {tenant.slug} has no domain.", code="tenant_not_active")
    default_port = {"http": "80", "https": "443"}.get(scheme)
    authority = domain if not port or port == default_port else f"{domain}:{port}"
    return f"{scheme}://{authority}{PATH.format(secret=secret)}"


# --- services ----------------------------------------------------------------------------


def invitation_create(
    *,
    actor: Principal,
    tenant: Tenant,
    roles: Iterable[str],
    key_grant: KeyGrant | None = None,
    email: str = "",
    scheme: str = "https",
    port: str = "",
) -> tuple[Invitation, str]:
    """Invite someone to `tenant` with `roles` and, for a key user, `key_grant` (by default
    the inviter's own; every key when a platform operator invites a tenant's first members).
    Returns the invitation and its link, which is never available again."""
    roles = _valid_roles(roles)
    grant = _grant_offered(roles=roles, given=key_grant, actor=actor)
    email = _valid_email(email)
    if tenant.is_platform or tenant.is_template or tenant.status != TenantStatus.ACTIVE:
        raise Conflict(
            f"Tenant {tenant.slug} is not active: nobody can be invited to it.",
            code="tenant_not_active",
        )
    if (
        actor.tenant_id == tenant.pk
        and set(roles) & {Role.KEY_ADMIN, Role.TENANT_ADMIN}
        and action_gated("member.role_change")
    ):
        # Else inviting a second account of one's own would go round the four eyes.
        raise Conflict(
            "This tenant's approval policy gates granting key_admin or tenant_admin: invite "
            "with other roles, then change the member's roles (that waits for approval).",
            code="approval_required",
        )
    if actor.tenant_id != tenant.pk:
        if Role.PLATFORM_OPERATOR not in actor.roles:
            raise Forbidden("You can only invite people to your own tenant.", code="wrong_tenant")
        if tenant_has_admin(tenant):
            # What grant_check would refuse, said in the operator's terms.
            raise Forbidden(
                f"Tenant {tenant.slug} has a tenant admin already: its admins invite its members.",
                code="role_not_held",
            )
    secret = secrets.token_urlsafe(32)
    with transaction.atomic():
        grant_check(actor=actor, tenant=tenant, roles=roles, key_grant=grant)
        now = timezone.now()
        expires_at = now + timedelta(hours=settings.KCM_INVITATION_TTL_HOURS)
        token = None
        if actor.kind == "token" and actor.token_id is not None:
            # Sent by a token: the link lives no longer than it (see _usable).
            token = ApiToken.objects.get(pk=actor.token_id)
            if token.expires_at is not None:
                expires_at = min(expires_at, token.expires_at)
        invitation = Invitation.objects.create(
            tenant=tenant,
            email=email,
            roles=roles,
            key_grant=grant.to_json() if grant is not None else None,
            digest=digest_secret(secret),
            created_by_id=person_of(actor),
            token=token,
            created_at=now,
            expires_at=expires_at,
        )
        _audit_in(
            tenant,
            action="invitation.create",
            target=f"invitation:{invitation.pk}",
            details={
                "roles": roles,
                "key_grant": invitation.key_grant,
                "email": email,
                "expires_at": invitation.expires_at.isoformat(),
            },
        )
    return invitation, invitation_link(tenant=tenant, secret=secret, scheme=scheme, port=port)


def invitation_accept(*, tenant: Tenant, secret: str, user: User) -> Membership:
    """Make `user` a member of `tenant` with what the invitation offers; one time only: of
    concurrent accepts exactly one wins, the others get `invitation_invalid`."""
    if not user.is_active:
        raise InvitationInvalid()
    with transaction.atomic():
        invitation = _by_secret(
            Invitation.objects.select_for_update(), tenant=tenant, secret=secret
        )
        now = timezone.now()
        if invitation is None or not _usable(invitation, now):
            raise InvitationInvalid()
        if invitation.created_by_id == user.pk:
            raise Forbidden(
                "Nobody accepts their own invitation: it is for somebody else.",
                code="own_invitation",
            )
        if _is_member(tenant, user):
            raise _member_exists(user)
        try:
            # A savepoint: when another invitation for this user is accepted between the check
            # and here, the unique constraint refuses, and the transaction can still ask why.
            with transaction.atomic():
                membership = Membership.objects.create(
                    tenant=tenant, user=user, roles=invitation.roles, key_grant=invitation.key_grant
                )
        except IntegrityError:
            if not _is_member(tenant, user):
                raise
            raise _member_exists(user) from None
        invitation.accepted_at = now
        invitation.accepted_by = user
        invitation.save(update_fields=["accepted_at", "accepted_by"])
        audit_record(
            action="invitation.accept",
            target=f"invitation:{invitation.pk}",
            details={"username": user.get_username(), "roles": invitation.roles},
        )
    return membership


def invitation_accept_new_user(
    *, tenant: Tenant, secret: str, username: str, email: str, password: str
) -> Membership:
    """Create the invitee's own account and accept with it, all or nothing: a link that does
    not work (or loses a race) leaves no account behind."""
    invitation_pending_get(tenant=tenant, secret=secret)  # a dead link fails before anything
    email = _valid_email(email)
    if not email:
        raise ValidationFailed("Give your email address.", code="invalid_email")
    with transaction.atomic():
        try:
            user = user_create(username=username.strip(), password=password, email=email)
        except Conflict:
            # Usernames are global: say only that this one cannot be had, not who holds it.
            raise Conflict(
                "That username is not available; choose another.", code="username_unavailable"
            ) from None
        return invitation_accept(tenant=tenant, secret=secret, user=user)


def invitation_revoke(*, tenant: Tenant, invitation_id: int, actor: Principal) -> Invitation:
    """Revoke a pending invitation the actor may see (see invitation_list_pending): its link
    stops working. Revoking one that is no longer pending changes nothing."""
    with transaction.atomic():
        invitation = _visible(actor, tenant).select_for_update().filter(pk=invitation_id).first()
        if invitation is None:
            raise NotFound("No such invitation.", code="invitation_not_found")
        if invitation.is_pending():
            invitation.revoked_at = timezone.now()
            invitation.save(update_fields=["revoked_at"])
            _audit_in(
                tenant,
                action="invitation.revoke",
                target=f"invitation:{invitation.pk}",
                details={"roles": invitation.roles},
            )
    return invitation


# --- helpers -----------------------------------------------------------------------------


def _by_secret(queryset: QuerySet[Invitation], *, tenant: Tenant, secret: str) -> Invitation | None:
    if not secret or len(secret) > 100:
        return None
    return queryset.filter(tenant=tenant, digest=digest_secret(secret)).first()


def _is_member(tenant: Tenant, user: User) -> bool:
    return Membership.objects.filter(tenant=tenant, user=user).exists()


def _member_exists(user: User) -> Conflict:
    return Conflict(
        f"{user.get_username()} is a member of this tenant already; the invitation is left unused.",
        code="member_exists",
    )


def _usable(invitation: Invitation, now: datetime | None = None) -> bool:
    """Pending, and its inviter may still offer it: a member who has since lost the roles or
    the grant offered (or been removed) can no longer bring anyone in, nor themselves back. A
    platform operator's invitation, or one made on the command line (no inviter), brings in a
    tenant's first administrator: it works only while the tenant has no tenant admin. One sent
    by an API token works only while that token does."""
    if not invitation.is_pending(now):
        return False
    if invitation.token is not None and not invitation.token.is_usable(now):
        return False  # sent by a token since revoked (or expired): it left no way in behind
    inviter = invitation.created_by_id
    if inviter is None:
        # Made on the command line: a first administrator's, good while there is none.
        return not tenant_has_admin(invitation.tenant)
    holds = Membership.objects.filter(user_id=inviter)
    member = holds.filter(tenant_id=invitation.tenant_id, roles__contains=invitation.roles).first()
    if member is not None:
        # ... and the key grant offered is still within the inviter's own (it may have narrowed).
        offered = grant_load(invitation.key_grant)
        own = grant_load(member.key_grant)
        return offered is None or (own is not None and offered.within(own))
    # A platform operator's: a first administrator's, good while the tenant has none and the
    # inviter is still an operator (so a spare link cannot bring the operator in later).
    return (
        not tenant_has_admin(invitation.tenant)
        and holds.filter(
            tenant__schema_name="public", roles__contains=[Role.PLATFORM_OPERATOR]
        ).exists()
    )


def _visible(actor: Principal, tenant: Tenant) -> QuerySet[Invitation]:
    """The invitations of `tenant` the actor may list and revoke (see invitation_list_pending)."""
    mine = Invitation.objects.filter(tenant=tenant)
    if actor.tenant_id == tenant.pk:
        if Role.TENANT_ADMIN in actor.roles:
            return mine
        person = person_of(actor)
        return mine.none() if person is None else mine.filter(created_by_id=person)
    if Role.PLATFORM_OPERATOR not in actor.roles:
        return mine.none()
    operators = Membership.objects.filter(
        tenant__schema_name="public", roles__contains=[Role.PLATFORM_OPERATOR]
    ).values("user_id")
    return mine.filter(Q(created_by__isnull=True) | Q(created_by__in=operators))


def _valid_roles(roles: Iterable[str]) -> list[str]:
    wanted = list(dict.fromkeys(roles))
    allowed = {role.value for role in TENANT_ROLES}
    if not wanted or not set(wanted) <= allowed:
        raise ValidationFailed(
            f"Invite to one or more of: {', '.join(sorted(allowed))}.", code="invalid_role"
        )
    return sorted(wanted)


def _grant_offered(
    *, roles: list[str], given: KeyGrant | None, actor: Principal
) -> KeyGrant | None:
    # As for members and tokens (grants.grant_for): grant_check then holds it to the actor's.
    if Role.KEY_USER not in roles:
        if given is not None:
            raise ValidationFailed("Only a key user holds a key grant.", code="invalid_grant")
        return None
    return given or grant_of(actor) or KeyGrant.everything()


def _valid_email(email: str) -> str:
    email = (email or "").strip()
    if email:
        try:
            validate_email(email)
        except ValidationError:
            raise ValidationFailed("Not an email address.", code="invalid_email") from None
    return email


def _audit_in(tenant: Tenant, **event: Any) -> None:
    """Record in the current schema's log and, when a platform operator acts from the
    platform, in the tenant's own log too: its admins see who was invited."""
    audit_record(**event)
    if connection.schema_name != tenant.schema_name:  # type: ignore[attr-defined]
        with tenant_context(tenant):
            audit_record(**event)
