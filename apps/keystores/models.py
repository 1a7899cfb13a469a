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
