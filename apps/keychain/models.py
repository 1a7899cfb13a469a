"""The key chain, in each tenant's schema: L1 CustomerKey → L2 TenantKey → L3 ServiceKey.

Every level has versions; one is primary (wraps/encrypts), older enabled ones still unwrap.
Each stored ciphertext names the exact parent version that wrapped it. L1 material never
leaves the HSM: its versions hold only the keystore's reference.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db import models
from django.utils import timezone


class KeyState(models.TextChoices):
    PENDING_IMPORT = "PENDING_IMPORT"
    ENABLED = "ENABLED"
    DISABLED = "DISABLED"
    PENDING_DELETION = "PENDING_DELETION"
    DESTROYED = "DESTROYED"
    UNAVAILABLE = "UNAVAILABLE"
    FORBIDDEN = "FORBIDDEN"


class VersionState(models.TextChoices):
    ENABLED = "ENABLED"
    RETIRED = "RETIRED"
    # L1 only: a retired version scheduled for destruction (apps.keychain.version_deletion);
    # it unwraps nothing until the deletion is cancelled.
    PENDING_DELETION = "PENDING_DELETION"
    DESTROYED = "DESTROYED"


class Origin(models.TextChoices):
    HSM = "HSM"
    BYOK = "BYOK"
    HYOK = "HYOK"


class Level(models.TextChoices):
    L1 = "L1", "Customer key"
    L2 = "L2", "Tenant key"
    L3 = "L3", "Service key"


class KeyBase(models.Model):
    """What every level shares: identity, state, primary version and scheduled deletion."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    state = models.CharField(max_length=20, choices=KeyState.choices, default=KeyState.ENABLED)
    state_reason = models.CharField(max_length=300, blank=True)
    primary_version = models.PositiveIntegerField(default=1)
    deletion_date = models.DateTimeField(null=True, blank=True)
    destroyed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class VersionBase(models.Model):
    version = models.PositiveIntegerField()
    state = models.CharField(
        max_length=16, choices=VersionState.choices, default=VersionState.ENABLED
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.key_id} v{self.version}"  # type: ignore[attr-defined]


class CustomerKey(KeyBase):
    """L1: the customer's root key, inside an HSM (or their own key manager)."""

    name = models.CharField(max_length=100)
    description = models.CharField(max_length=500, blank=True)
    origin = models.CharField(max_length=8, choices=Origin.choices, default=Origin.HSM)
    # HYOK: when the key manager first said it has no such key; a later sync confirms it (see
    # `revocation.external_key_missing`). Cleared when the manager answers otherwise.
    missing_since = models.DateTimeField(null=True, blank=True)

    level = Level.L1

    class Meta:
        # A constraint, not unique=True, which would add a second (pattern) index on name.
        constraints = [models.UniqueConstraint(fields=["name"], name="l1_name_unique")]

    def __str__(self) -> str:
        return f"L1 {self.name}"

    @property
    def material_expires_at(self) -> datetime | None:
        """BYOK: when the primary version's imported material expires (stored once, on the
        version; one query)."""
        return (
            self.versions.filter(version=self.primary_version)
            .values_list("material_expires_at", flat=True)
            .first()
        )


class ExternalKeyManager(models.Model):
    """HYOK: a customer's own key manager that KCM may ask to wrap and unwrap, never to export.

    `settings` holds what is not secret (host, port, certificates, token label); `credentials`
    (a client private key, a PIN) is sealed under the platform's root key in the HSM, bound to
    this tenant and this row, and never stored or returned in plain form.
    """

    class Kind(models.TextChoices):
        KMIP = "kmip", "KMIP"
        PKCS11 = "pkcs11", "PKCS#11"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    settings = models.JSONField(default=dict)
    credentials = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name"], name="key_manager_name_unique")]

    def __str__(self) -> str:
        return f"{self.kind} key manager {self.name}"


# The handle of a HYOK version: "hyok:<manager id>/<external key id>" (see CustomerKeyVersion).
HYOK_HANDLE_PREFIX = "hyok:"


class CustomerKeyVersion(VersionBase):
    # No index of its own: the one of l1_version_unique, on (key, version), serves it.
    key = models.ForeignKey(
        CustomerKey, on_delete=models.PROTECT, related_name="versions", db_index=False
    )
    # Where this version's material is: for HSM and BYOK the platform keystore's opaque handle
    # (for PKCS#11: the object's CKA_ID in hex; empty while imported material is deleted or
    # expired); for HYOK "hyok:<manager id>/<external key id>", the same reference as the two
    # fields below, kept so that a key is linked once. Not secret.
    handle = models.CharField(max_length=200)
    # BYOK: the key check values the customer can compare (classic: AES-ECB of a zero block,
    # 3 bytes; CMAC: AES-CMAC of a zero block, 5 bytes), the fingerprint that recognises the
    # same material again, and its expiry.
    key_check_value = models.CharField(max_length=6, blank=True)
    key_check_value_cmac = models.CharField(max_length=10, blank=True)
    material_fingerprint = models.CharField(max_length=64, blank=True)
    material_expires_at = models.DateTimeField(null=True, blank=True)
    # HYOK: the key in the customer's key manager that holds this version.
    external_manager = models.ForeignKey(
        ExternalKeyManager, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    external_key_id = models.CharField(max_length=150, blank=True)
    # When a version PENDING_DELETION is destroyed (kept afterwards, as the record of when).
    deletion_date = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["key", "version"], name="l1_version_unique"),
            # One place per key material: a HYOK reference is linked once (BYOK versions whose
            # material is deleted have no handle).
            models.UniqueConstraint(
                fields=["handle"], condition=~models.Q(handle=""), name="l1_version_handle_unique"
            ),
        ]


class TenantKey(KeyBase):
    """L2: one per L1, wrapped by it; wraps the tenant's service keys."""

    customer_key = models.OneToOneField(
        CustomerKey, on_delete=models.PROTECT, related_name="tenant_key"
    )

    level = Level.L2

    def __str__(self) -> str:
        return f"L2 of {self.customer_key_id}"


class TenantKeyVersion(VersionBase):
    # No index of its own: the one of l2_version_unique, on (key, version), serves it.
    key = models.ForeignKey(
        TenantKey, on_delete=models.PROTECT, related_name="versions", db_index=False
    )
    parent = models.ForeignKey(CustomerKeyVersion, on_delete=models.PROTECT, related_name="+")
    wrapped = models.BinaryField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["key", "version"], name="l2_version_unique"),
        ]


class ServiceKey(KeyBase):
    """L3: one per named service; wraps the data keys (L4) the service's records carry."""

    name = models.SlugField(max_length=64, db_index=False)
    description = models.CharField(max_length=500, blank=True)
    tenant_key = models.ForeignKey(TenantKey, on_delete=models.PROTECT, related_name="service_keys")

    level = Level.L3

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name"], name="l3_name_unique")]

    def __str__(self) -> str:
        return f"L3 {self.name}"


class ServiceKeyVersion(VersionBase):
    # No index of its own: the one of l3_version_unique, on (key, version), serves it.
    key = models.ForeignKey(
        ServiceKey, on_delete=models.PROTECT, related_name="versions", db_index=False
    )
    parent = models.ForeignKey(TenantKeyVersion, on_delete=models.PROTECT, related_name="+")
    wrapped = models.BinaryField()
    # Encryptions reserved so far (an upper bound of those done): processes reserve blocks,
    # so a crash can only over-count, never let a GCM key pass its limit.
    usage_reserved = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["key", "version"], name="l3_version_unique"),
        ]


class ImportToken(models.Model):
    """BYOK import parameters for one L1: an RSA wrapping key pair in the HSM (the handle is
    cleared when it is destroyed) and the algorithm the customer wraps with, until expiry."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    key = models.ForeignKey(CustomerKey, on_delete=models.PROTECT, related_name="import_tokens")
    algorithm = models.CharField(max_length=32)
    wrapping_key_bits = models.PositiveIntegerField()
    wrapping_handle = models.CharField(max_length=200, blank=True)
    public_key_der = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"import token {self.pk} for {self.key_id}"
