"""Platform keys: keys of the platform itself (not of any tenant) held by the platform keystore,
created at deploy time (`manage.py kcm_keys init`, run by `kcm_migrate`) and only read at run
time."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class PlatformKey(models.Model):
    """A platform-wide key in the HSM, e.g. the one that signs audit checkpoints."""

    purpose = models.CharField(max_length=32, unique=True)
    handle = models.CharField(max_length=200)
    public_key_der = models.BinaryField(blank=True)
    fingerprint = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        # The table predates this app (it was created by the tenants app).
        db_table = "tenants_platformkey"

    def __str__(self) -> str:
        return f"{self.purpose} ({self.fingerprint[:16]})"


class TokenClaim(models.Model):
    """A customer's PKCS#11 token (library and token serial) and the one owner that may use it
    as a key manager: a second tenant naming the same token is refused. The owner is an opaque
    string (a tenant's uid) to this layer, which knows no tenancy."""

    library = models.CharField(max_length=500)
    serial = models.CharField(max_length=64)
    owner = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["library", "serial"], name="token_claim_once")
        ]

    def __str__(self) -> str:
        return f"{self.library} #{self.serial}"
