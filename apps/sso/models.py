"""Public-schema models of single sign-on: a tenant's OpenID Connect provider, the identities
that signed in through it, and sign-ins in flight."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from apps.tenants.models import Tenant


class OidcProvider(models.Model):
    """A tenant's one OpenID Connect provider. The client secret is sealed under the platform's
    credentials key (apps.sso.sealing) and never leaves this model in the clear but to the
    provider's token endpoint. `role_map` maps values of the `role_claim` claim to KCM roles:
    {"kcm-admins": ["tenant_admin"], "kcm-keys": ["key_admin"]}."""

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="oidc_provider")
    name = models.CharField(max_length=60)
    issuer = models.URLField(max_length=500)
    client_id = models.CharField(max_length=255)
    client_secret = models.BinaryField()
    role_claim = models.CharField(max_length=100, default="groups")
    role_map = models.JSONField(default=dict)
    allowed_domains = ArrayField(models.CharField(max_length=253), default=list)
    # Off: members of this tenant sign in only through this provider.
    local_passwords = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.issuer}) for {self.tenant_id}"


class SsoIdentity(models.Model):
    """An account at a tenant's provider, (issuer, subject), linked to a KCM user: once linked,
    only this pair signs that user in through the provider, whatever email it later claims."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    issuer = models.CharField(max_length=500)
    subject = models.CharField(max_length=255)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_identities"
    )
    email = models.EmailField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_login_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "issuer", "subject"], name="sso_identity_subject"
            ),
            models.UniqueConstraint(fields=["tenant", "issuer", "user"], name="sso_identity_user"),
        ]

    def __str__(self) -> str:
        return f"{self.issuer}#{self.subject} -> {self.user_id}"


class SsoLogin(models.Model):
    """A sign-in sent to the provider and not back yet. The browser holds `state` in a cookie;
    the row (found by the state's digest) holds the nonce and the PKCE verifier, and is deleted
    when the browser comes back, so that a callback is accepted once."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    state_digest = models.CharField(max_length=64, unique=True)
    nonce = models.CharField(max_length=100)
    code_verifier = models.CharField(max_length=128)
    next_url = models.CharField(max_length=500)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"sign-in {self.pk} to {self.tenant_id}"
