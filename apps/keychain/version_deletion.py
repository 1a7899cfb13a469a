"""Scheduled deletion of one L1 version: what erases a rotated-away root key.

Rotation only retires an L1 version (it wraps nothing new and still unwraps, so a backup taken
before the rewrap restores). A key admin who wants the old HSM object gone schedules the
version's deletion with the same waiting period as a key's; during it the version unwraps
nothing (so anything that still needed it shows up as an error while a cancel can undo it),
and after it the deletion sweep destroys the version's object in its keystore. Never the
primary version, and never while a tenant-key version is still wrapped under it (the rewrap
has not finished): destroying it would make that tenant key, and everything below it,
unrecoverable. A customer's own key manager (HYOK) keeps its key: KCM only forgets it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.keychain.errors import (
    InvalidKeyState,
    KeyNotFound,
    KeyVersionInUse,
    KeyVersionNotFound,
    KeyVersionPrimary,
)
from apps.keychain.models import (
    CustomerKey,
    CustomerKeyVersion,
    KeyState,
    TenantKeyVersion,
    VersionState,
)
from apps.keychain.revocation import broadcast_revocation
from apps.keychain.roots import root_destroy
from apps.keychain.services import deletion_date_after

logger = logging.getLogger(__name__)


def _locked_version(key_id: UUID | str, version: int) -> tuple[CustomerKey, CustomerKeyVersion]:
    """The L1 (its row locked: rotations, rewraps' retirement and imports take the same lock)
    and its version `version`."""
    l1 = CustomerKey.objects.select_for_update().filter(pk=key_id).first()
    if l1 is None:
        raise KeyNotFound("No such customer key (only customer-key versions are deleted alone).")
    row = CustomerKeyVersion.objects.select_for_update().filter(key=l1, version=version).first()
    if row is None:
        raise KeyVersionNotFound(f"The customer key has no version {version}.")
    return l1, row


def dependants(version: CustomerKeyVersion) -> int:
    """Tenant-key versions still wrapped under `version` (with material): what destroying it
    would make unrecoverable."""
    return (
        TenantKeyVersion.objects.filter(parent=version)
        .exclude(state=VersionState.DESTROYED)
        .count()
    )


def _ensure_deletable(l1: CustomerKey, row: CustomerKeyVersion) -> None:
    if l1.state == KeyState.DESTROYED:
        raise InvalidKeyState("The customer key was destroyed, with all its versions.")
    if row.version == l1.primary_version:
        raise KeyVersionPrimary(
            f"Version {row.version} is the key's primary version; rotate the key (and let the "
            "rewrap finish) before deleting it."
        )
    left = dependants(row)
    if left:
        raise KeyVersionInUse(
            f"{left} tenant-key version(s) are still wrapped under version {row.version}: "
            "finish the rewrap (rotation job) before deleting it."
        )


def l1_version_schedule_deletion(
    *, key_id: UUID | str, version: int, pending_days: int
) -> CustomerKeyVersion:
    """Stop the (non-primary, unreferenced) L1 version now and destroy it after `pending_days`
    unless the deletion is cancelled."""
    deletion_date = deletion_date_after(pending_days)
    with transaction.atomic():
        l1, row = _locked_version(key_id, version)
        if row.state not in (VersionState.RETIRED, VersionState.ENABLED):
            raise InvalidKeyState(
                f"Version {version} is {row.state}; only a retired version can be scheduled "
                "for deletion."
            )
        _ensure_deletable(l1, row)
        row.state, row.deletion_date = VersionState.PENDING_DELETION, deletion_date
        row.save(update_fields=["state", "deletion_date"])
        broadcast_revocation()
        audit_record(
            action="key.version.schedule_deletion",
            target=str(l1.pk),
            target_version=version,
            details={"level": "L1", "deletion_date": deletion_date.isoformat()},
        )
    return row


def l1_version_cancel_deletion(*, key_id: UUID | str, version: int) -> CustomerKeyVersion:
    """Cancel the version's scheduled deletion: it is RETIRED again (it unwraps, wraps nothing)."""
    with transaction.atomic():
        l1, row = _locked_version(key_id, version)
        if row.state != VersionState.PENDING_DELETION:
            raise InvalidKeyState(f"Version {version} is {row.state}, not pending deletion.")
        row.state, row.deletion_date = VersionState.RETIRED, None
        row.save(update_fields=["state", "deletion_date"])
        broadcast_revocation()
        audit_record(
            action="key.version.cancel_deletion",
            target=str(l1.pk),
            target_version=version,
            details={"level": "L1"},
        )
    return row


def l1_version_destroy(
    *, key_id: UUID | str, version: int, now: datetime | None = None
) -> CustomerKeyVersion:
    """Destroy a version whose deletion date has passed: its object in the platform keystore
    (HSM, BYOK) is destroyed, irrecoverably; checked again that nothing depends on it."""
    now = now or timezone.now()
    with transaction.atomic():
        l1, row = _locked_version(key_id, version)
        if (
            row.state != VersionState.PENDING_DELETION
            or row.deletion_date is None
            or row.deletion_date > now
        ):
            raise InvalidKeyState("Only a version whose deletion date has passed can be destroyed.")
        _ensure_deletable(l1, row)
        in_keystore = root_destroy(row)
        row.state = VersionState.DESTROYED
        row.save(update_fields=["state"])
        broadcast_revocation()
        audit_record(
            action="key.version.destroy",
            target=str(l1.pk),
            target_version=version,
            details={"level": "L1", "origin": l1.origin, "keystore_object_destroyed": in_keystore},
        )
    return row


def l1_version_deletion_sweep(*, now: datetime | None = None) -> list[str]:
    """Destroy this tenant's L1 versions whose deletion date has passed; returns them as
    "<key id>/v<version>". A version that cannot be destroyed (something depends on it again,
    the HSM failed) stays pending: the next sweep retries, and the failure is logged."""
    now = now or timezone.now()
    due = CustomerKeyVersion.objects.filter(
        state=VersionState.PENDING_DELETION, deletion_date__lte=now
    ).values_list("key_id", "version")
    destroyed = []
    for key_id, version in list(due):
        try:
            l1_version_destroy(key_id=key_id, version=version, now=now)
        except Exception:
            logger.exception(
                "destroying version %s of key %s failed; the next sweep retries", version, key_id
            )
        else:
            destroyed.append(f"{key_id}/v{version}")
    return destroyed
