"""Second factors of console users (public schema: a user signs in to several tenants) and the
per-tenant MFA policy.

A TOTP seed is sealed under the platform credentials key (apps.mfa.totp); recovery codes are
stored as keyed digests only. WebAuthn keeps the credential's public key and sign counter."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class DeviceKind(models.TextChoices):
    TOTP = "totp", "Authenticator app (TOTP)"
    WEBAUTHN = "webauthn", "Passkey / security key"


class MfaDevice(models.Model):
    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mfa_devices"
    )
    kind = models.CharField(max_length=10, choices=DeviceKind.choices)
    name = models.CharField(max_length=100)
    # Unconfirmed TOTP devices are enrolments in progress; they never pass a sign-in.
    confirmed = models.BooleanField(default=False)
    secret_sealed = models.BinaryField(null=True, blank=True)
    # The last TOTP time step accepted: a code is good once (no replay within its window).
    last_timestep = models.BigIntegerField(default=0)
    credential_id = models.BinaryField(null=True, blank=True)
    public_key = models.BinaryField(null=True, blank=True)
    sign_count = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


class RecoveryCode(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mfa_recovery_codes"
    )
    digest = models.CharField(max_length=64)
    used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"recovery code of user {self.user_id}"


class MfaAttempts(models.Model):
    """Failed second-factor attempts per user: past the limit every code is refused until
    `locked_until`, whichever page or API the attempts came through."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mfa_attempts"
    )
    failures = models.IntegerField(default=0)
    locked_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"MFA attempts of user {self.user_id}"


class MfaPolicy(models.Model):
    """A tenant's MFA setting (tenant admins set it): whether key admins and tenant admins
    must have a second factor."""

    tenant = models.OneToOneField(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="mfa_policy"
    )
    require_for_admins = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"MFA policy of tenant {self.tenant_id}"
