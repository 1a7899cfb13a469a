"""Writes for tenants, members and API tokens. Console, API and commands all call these."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.core.approvals import action_gated
from apps.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from apps.core.roles import TENANT_ROLES, Role
from apps.core.tenancy import Principal
from apps.tenants.access import person_of
from apps.tenants.grants import KeyGrant, grant_check, grant_for, grant_load
from apps.tenants.models import ApiToken, Domain, Membership, Tenant, TenantStatus
from apps.tenants.shredding import terminated_roots_schedule
from apps.tenants.tokens import tokens_hold_no_more

_SLUG = re.compile(r"^[a-z][a-z0-9-]{1,38}[a-z0-9]$")
RESERVED_SLUGS = {"www", "api", "admin", "public", "platform", "static", "kcm", "template"}


class InvalidTransition(Conflict):
    code = "invalid_transition"
    title = "The tenant cannot move to that state from its current one"


_TRANSITIONS: dict[str, set[str]] = {
    TenantStatus.PROVISIONING: {TenantStatus.ACTIVE, TenantStatus.TERMINATING},
    TenantStatus.ACTIVE: {TenantStatus.SUSPENDED, TenantStatus.TERMINATING},
    TenantStatus.SUSPENDED: {TenantStatus.ACTIVE, TenantStatus.TERMINATING},
    TenantStatus.TERMINATING: {TenantStatus.TERMINATED},
    TenantStatus.TERMINATED: set(),
}


def _schema_for(slug: str) -> str:
    return "t_" + slug.replace("-", "_")


def _set_status(tenant: Tenant, status: str, reason: str = "") -> None:
    if status not in _TRANSITIONS[tenant.status]:
        raise InvalidTransition(
            f"Tenant {tenant.slug} is {tenant.status}; it cannot become {status}."
        )
    tenant.status = status
    tenant.status_reason = reason
    tenant.save(update_fields=["status", "status_reason", "updated_at"])


def schema_clone(*, source: str, target: str) -> None:
    """Create schema `target` as a structural copy of the migrated `source` schema, in one
    round trip (see the kcm_clone_schema SQL function in the tenants migrations)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT public.kcm_clone_schema(%s, %s)", [source, target])


def tenant_create(*, slug: str, name: str = "") -> Tenant:
    """Register a tenant and provision its schema from the template; ACTIVE on return."""
    slug = slug.strip().lower()
    if not _SLUG.match(slug) or slug in RESERVED_SLUGS:
        raise ValidationFailed(
            "A tenant slug is 3-40 characters: lower-case letters, digits and hyphens, starting "
            "with a letter, not ending with a hyphen, and not a reserved word.",
            code="invalid_slug",
        )
    if Tenant.objects.filter(slug=slug).exists():
        raise Conflict(f"A tenant named {slug!r} exists already.", code="tenant_exists")
    tenant = Tenant.objects.create(
        slug=slug,
        name=name or slug,
        schema_name=_schema_for(slug),
        status=TenantStatus.PROVISIONING,
    )
    tenant_provision(tenant=tenant)
    return tenant


def tenant_provision(*, tenant: Tenant) -> Tenant:
    """Clone the template schema into the tenant's schema, add its domain and activate it.
    All or nothing: a failure leaves the tenant PROVISIONING, so this can be run again."""
    if tenant.status != TenantStatus.PROVISIONING:
        raise InvalidTransition(f"Tenant {tenant.slug} is {tenant.status}, not PROVISIONING.")
    with transaction.atomic():
        schema_clone(source=settings.KCM_TEMPLATE_SCHEMA, target=tenant.schema_name)
        Domain.objects.create(
            tenant=tenant, domain=f"{tenant.slug}.{settings.KCM_BASE_DOMAIN}", is_primary=True
        )
        _set_status(tenant, TenantStatus.ACTIVE)
        audit_record(action="tenant.create", target=tenant.slug, details={"name": tenant.name})
    return tenant


def tenant_suspend(*, tenant: Tenant, reason: str = "") -> Tenant:
    with transaction.atomic():
        _set_status(tenant, TenantStatus.SUSPENDED, reason)
        audit_record(action="tenant.suspend", target=tenant.slug, details={"reason": reason})
    return tenant


def tenant_resume(*, tenant: Tenant) -> Tenant:
    with transaction.atomic():
        _set_status(tenant, TenantStatus.ACTIVE)
        audit_record(action="tenant.resume", target=tenant.slug)
    return tenant


def tenant_terminate(*, tenant: Tenant, reason: str = "") -> Tenant:
    """Revoke all access, drop the tenant's schema (its key chain with it) and keep the record.
    The tenant's objects in the platform keystore (its L1 keys) are destroyed only after the
    waiting period (`apps.tenants.shredding`): until then a backup can still bring it back."""
    if tenant.is_platform or tenant.is_template:
        raise InvalidTransition("The platform and template tenants cannot be terminated.")
    with transaction.atomic():
        _set_status(tenant, TenantStatus.TERMINATING, reason)
    with transaction.atomic():
        now = timezone.now()
        ApiToken.objects.filter(tenant=tenant, revoked_at__isnull=True).update(revoked_at=now)
        Membership.objects.filter(tenant=tenant).delete()
        Domain.objects.filter(tenant=tenant).delete()
        shredded, due = terminated_roots_schedule(tenant=tenant, now=now)
        with connection.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA IF EXISTS "{tenant.schema_name}" CASCADE')
        _set_status(tenant, TenantStatus.TERMINATED, reason)
        audit_record(
            action="tenant.terminate",
            target=tenant.slug,
            details={
                "reason": reason,
                "hsm_objects_to_destroy": shredded,
                "destroy_after": due.isoformat(),
            },
        )
    return tenant


def tenant_get(*, slug: str) -> Tenant:
    tenant = (
        Tenant.objects.filter(slug=slug, is_template=False).exclude(schema_name="public").first()
    )
    if tenant is None:
        raise NotFound(f"No tenant {slug!r}.", code="tenant_not_found")
    return tenant


def _username_taken(username: str) -> bool:
    return User.objects.filter(username=username).exists()


def _user_exists(username: str) -> Conflict:
    return Conflict(f"User {username!r} exists already.", code="user_exists")


def user_create(*, username: str, password: str, email: str = "") -> User:
    if _username_taken(username):
        raise _user_exists(username)
    user = User(username=username, email=email)
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise ValidationFailed(" ".join(exc.messages), code="weak_password") from None
    user.set_password(password)
    try:
        # A savepoint: a concurrent sign-up may take the username between the check and here.
        with transaction.atomic():
            user.save()
    except IntegrityError:
        if not _username_taken(username):
            raise
        raise _user_exists(username) from None
    return user


def roles_validate(*, tenant: Tenant, roles: Iterable[str]) -> list[str]:
    """`roles` as stored: a non-empty, sorted list of roles that exist in `tenant`."""
    allowed = {Role.PLATFORM_OPERATOR} if tenant.is_platform else set(TENANT_ROLES)
    wanted = sorted(set(roles))
    if not wanted or not set(wanted) <= allowed:
        raise ValidationFailed(
            f"Roles are one or more of {', '.join(sorted(allowed))}.", code="invalid_role"
        )
    return wanted


def membership_set(
    *, tenant: Tenant, user: User, roles: Iterable[str], key_grant: KeyGrant | None = None
) -> Membership:
    """Give `user` exactly `roles` (and, as a key user, `key_grant`) in `tenant`. No checks of
    who asks: callers that act for someone run `grant_check` first."""
    stored = roles_validate(tenant=tenant, roles=roles)
    grant = key_grant.to_json() if key_grant is not None and Role.KEY_USER in stored else None
    membership, _ = Membership.objects.update_or_create(
        user=user, tenant=tenant, defaults={"roles": stored, "key_grant": grant}
    )
    return membership


def _keep_an_admin(*, tenant: Tenant, losing: Membership) -> None:
    """Refuse (409 `last_tenant_admin`) a change that would leave `tenant` without a tenant
    admin: only a tenant without one may be given its first by a platform operator, so losing
    the last would hand that power back. Call in a transaction; it locks the tenant's row, so
    two admins removing each other at once cannot both succeed."""
    if Role.TENANT_ADMIN not in losing.roles:
        return
    Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
    admins = Membership.objects.filter(tenant=tenant, roles__contains=[Role.TENANT_ADMIN])
    if not admins.exclude(pk=losing.pk).exists():
        raise Conflict(
            "This is the tenant's last tenant admin: make another member tenant admin first.",
            code="last_tenant_admin",
        )


def membership_remove(*, tenant: Tenant, membership_id: int, acting: Principal) -> None:
    membership = Membership.objects.filter(pk=membership_id, tenant=tenant).first()
    if membership is None:
        raise NotFound("No such member.", code="member_not_found")
    if membership.user_id == person_of(acting):
        raise Conflict("You cannot remove yourself.", code="cannot_remove_self")
    with transaction.atomic():
        _keep_an_admin(tenant=tenant, losing=membership)
        revoked = tokens_hold_no_more(
            tenant=tenant, user_id=membership.user_id, roles=(), grant=None
        )
        audit_record(
            action="member.remove",
            target=membership.user.username,
            details={"roles": membership.roles, "revoked_tokens": revoked},
        )
        membership.delete()


def membership_assign(
    *, tenant: Tenant, user: User, roles: Iterable[str], source: str
) -> Membership:
    """Give `user` exactly `roles` in `tenant` as an outside authority says (`source`, e.g.
    "sso": the tenant's sign-on provider maps them at each sign-in). A key user keeps the grant
    they had (none for a new one); the last tenant admin is never taken away
    (`last_tenant_admin`); tokens beyond the new roles are revoked.

    While the tenant's approval policy gates granting key_admin or tenant_admin
    (`member.role_change`), the authority cannot grant them either: an admin role the member
    does not hold yet is withheld (and recorded), the others are given; a member it would leave
    with no role is refused (409 `approval_required`). Invite them with another role, then ask
    for the admin role through an approval request; later sign-ins keep it."""
    wanted = roles_validate(tenant=tenant, roles=roles)
    with transaction.atomic():
        membership = Membership.objects.select_for_update().filter(user=user, tenant=tenant).first()
        before = sorted(membership.roles) if membership is not None else []
        withheld: list[str] = []
        if action_gated("member.role_change"):
            withheld = sorted((set(wanted) - set(before)) & {Role.KEY_ADMIN, Role.TENANT_ADMIN})
            wanted = [role for role in wanted if role not in withheld]
            if withheld:
                audit_record(
                    action="member.role_withheld",
                    target=user.username,
                    details={"withheld": withheld, "by": source},
                )
            if not wanted:
                raise Conflict(
                    f"Granting {', '.join(withheld)} needs approval in this tenant: ask a tenant "
                    "admin to invite you with another role, then to request the change.",
                    code="approval_required",
                )
        if before == wanted:
            return membership  # type: ignore[return-value]
        if membership is not None and Role.TENANT_ADMIN not in wanted:
            _keep_an_admin(tenant=tenant, losing=membership)
        grant = grant_load(membership.key_grant) if membership is not None else None
        membership = membership_set(tenant=tenant, user=user, roles=wanted, key_grant=grant)
        revoked = tokens_hold_no_more(
            tenant=tenant,
            user_id=user.pk,
            roles=membership.roles,
            grant=grant_load(membership.key_grant),
        )
        audit_record(
            action="member.role_change" if before else "member.join",
            target=user.username,
            details={
                "from": before,
                "to": membership.roles,
                "by": source,
                "revoked_tokens": revoked,
            },
        )
        return membership


UNCHANGED: Any = object()  # for `key_grant`: keep the member's grant
_UNCHANGED = UNCHANGED


def member_change_params(
    *, roles: Iterable[str] | None, key_grant: Any = UNCHANGED
) -> dict[str, Any]:
    """`member_update`'s arguments as JSON, as an approval request stores them (the whole new
    set of roles, sorted; the key grant only when one is given) and runs them."""
    params: dict[str, Any] = {}
    if roles is not None:
        params["roles"] = sorted(set(roles))
    if key_grant is not UNCHANGED:
        params["key_grant"] = None if key_grant is None else key_grant.to_json()
    return params


def _given(key_grant: Any) -> KeyGrant | None:
    return None if key_grant is _UNCHANGED else key_grant


def member_update(
    *,
    tenant: Tenant,
    membership_id: int,
    actor: Principal,
    roles: Iterable[str] | None = None,
    key_grant: KeyGrant | None = _UNCHANGED,
) -> Membership:
    """Change another member's roles and/or key grant (None for `roles`: keep them).

    Nobody changes their own (`cannot_change_own_role`); every role added must be held by the
    actor and a new grant must be within the actor's (`grant_check`); taking roles away needs
    tenant_admin. A member who becomes a key user without a grant given gets the actor's."""
    with transaction.atomic():
        membership = (
            Membership.objects.select_for_update()
            .select_related("user")
            .filter(pk=membership_id, tenant=tenant)
            .first()
        )
        if membership is None:
            raise NotFound("No such member.", code="member_not_found")
        if membership.user_id == person_of(actor):
            raise Forbidden(
                "Nobody changes their own roles or key grant; ask another administrator.",
                code="cannot_change_own_role",
            )
        before = set(membership.roles)
        after = set(roles_validate(tenant=tenant, roles=before if roles is None else roles))
        if before - after and Role.TENANT_ADMIN not in actor.roles:
            raise Forbidden("Only a tenant admin takes roles away.", code="role_not_held")
        if Role.TENANT_ADMIN in before - after:
            _keep_an_admin(tenant=tenant, losing=membership)
        old_grant = grant_load(membership.key_grant)
        if Role.KEY_USER not in after:
            grant = grant_for(roles=after, given=_given(key_grant), actor=actor)
        elif key_grant is not _UNCHANGED:
            grant = key_grant  # None: a key user who may use no key
        elif Role.KEY_USER in before:
            grant = old_grant
        else:
            grant = grant_for(roles=after, given=None, actor=actor)
        changed_grant = grant if grant is not None and grant != old_grant else None
        grant_check(actor=actor, tenant=tenant, roles=after - before, key_grant=changed_grant)
        membership = membership_set(
            tenant=tenant, user=membership.user, roles=after, key_grant=grant
        )
        revoked = tokens_hold_no_more(
            tenant=tenant,
            user_id=membership.user_id,
            roles=membership.roles,
            grant=grant_load(membership.key_grant),
        )
        audit_record(
            action="member.role_change",
            target=membership.user.username,
            details={
                "from": sorted(before),
                "to": membership.roles,
                "key_grant": membership.key_grant,
                "revoked_tokens": revoked,
            },
        )
        return membership
