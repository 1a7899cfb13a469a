"""Public-schema models: tenants, their domains, memberships and API tokens."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone
from django_tenants.models import DomainMixin, TenantMixin

from apps.core.roles import Role


class TenantStatus(models.TextChoices):
    PROVISIONING = "PROVISIONING"
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"


class Tenant(TenantMixin):
    """A customer. `schema_name` "public" is the platform itself; the template is a schema
    kept migrated so that new tenants are cloned from it rather than migrated."""

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    slug = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=200)
    status = models.CharField(
        max_length=16, choices=TenantStatus.choices, default=TenantStatus.PROVISIONING
    )
    is_template = models.BooleanField(default=False)
    status_reason = models.CharField(max_length=500, blank=True)
    # Bumped (and broadcast) by every key-chain change that may revoke access. Every request
    # loads the tenant row anyway, so comparing it with the key cache's epoch costs nothing.
    key_epoch = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    # Schemas are created by apps.tenants.services.tenant_provision (template clone).
    auto_create_schema = False
    auto_drop_schema = False

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_platform(self) -> bool:
        return self.schema_name == "public"


class Domain(DomainMixin):
    pass


class Membership(models.Model):
    """A user's roles in one tenant (platform operators hold theirs in the platform tenant).
    `key_grant` (see apps.tenants.grants) lists the service keys a `key_user` may use."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    roles = ArrayField(models.CharField(max_length=32, choices=Role.choices))
    key_grant = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="membership_user_tenant"),
            models.CheckConstraint(
                condition=models.Q(roles__len__gt=0), name="membership_holds_a_role"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.tenant}: {','.join(sorted(self.roles))}"


class ApiToken(models.Model):
    """A bearer token bound to one tenant and one role (a token serves one purpose; a
    `key_user` token carries its `key_grant`). Only a SHA-256 digest of the secret is stored;
    the token itself is shown once, when it is created."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    role = models.CharField(max_length=32, choices=Role.choices)
    key_grant = models.JSONField(null=True, blank=True)
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The token that created this one through the API (its person is then `created_by` too):
    # revoking a token revokes every token it made, and none outlives it.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    def is_usable(self, now: object | None = None) -> bool:
        moment = now or timezone.now()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > moment  # type: ignore[operator]


class TerminatedRoot(models.Model):
    """An object of a terminated tenant in the platform keystore (an L1 version's key, a BYOK
    wrapping key), kept in the public schema since the tenant's schema is gone: destroyed once
    `due_at` has passed (crypto-shredding after the waiting period), never before."""

    class Kind(models.TextChoices):
        ROOT = "root", "root key"
        WRAPPING = "wrapping", "BYOK wrapping key pair"

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    # The platform keystore's opaque handle (for PKCS#11 the object's CKA_ID): not secret.
    handle = models.CharField(max_length=200, unique=True)
    due_at = models.DateTimeField()
    destroyed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(
                fields=["due_at"],
                condition=models.Q(destroyed_at__isnull=True),
                name="terminated_root_due",
            )
        ]

    def __str__(self) -> str:
        return f"root {self.handle} of {self.tenant_id}, due {self.due_at:%Y-%m-%d}"


class Invitation(models.Model):
    """A one-time, expiring offer of roles (and a key grant) in one tenant, sent as a link that
    carries a secret: whoever opens it signs in or creates an account, then becomes a member.
    Only a SHA-256 digest of the secret is stored; the link is shown once, to the inviter.
    `email` is a note for the inviter (where the link was sent), never shown to the invitee."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(blank=True)
    roles = ArrayField(models.CharField(max_length=32, choices=Role.choices))
    key_grant = models.JSONField(null=True, blank=True)
    digest = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The API token that sent it, if one did: the link expires no later than that token and
    # dies when it is revoked (a token leaves no way in behind it).
    token = models.ForeignKey(
        ApiToken, null=True, blank=True, on_delete=models.CASCADE, related_name="invitations"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(roles__len__gt=0), name="invitation_offers_a_role"
            ),
        ]
        indexes = [
            models.Index(
                fields=["tenant", "expires_at"],
                condition=models.Q(accepted_at__isnull=True, revoked_at__isnull=True),
                name="invitation_pending",
            )
        ]

    def __str__(self) -> str:
        return f"invitation {self.pk} to {self.tenant_id}: {','.join(sorted(self.roles))}"

    def is_pending(self, now: datetime | None = None) -> bool:
        """Not accepted, not revoked, not expired: the link still works."""
        moment = now or timezone.now()
        live = self.accepted_at is None and self.revoked_at is None
        return live and self.expires_at > moment
