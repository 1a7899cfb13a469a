"""Key-chain lifecycle writes: create, rotate, enable, disable, schedule/cancel deletion,
destroy. Every change that may revoke access is broadcast to every process (the kill switch).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.core.errors import Conflict, ValidationFailed
from apps.keychain import crypto
from apps.keychain.chain import (
    ensure_usable,
    find_key,
    l1_encrypt,
    l2_aad,
    l2_material,
    l3_aad,
    tenant,
)
from apps.keychain.errors import InvalidKeyState, KeyNotFound
from apps.keychain.models import (
    CustomerKey,
    CustomerKeyVersion,
    KeyBase,
    KeyState,
    Origin,
    ServiceKey,
    ServiceKeyVersion,
    TenantKey,
    TenantKeyVersion,
    VersionState,
)
from apps.keychain.revocation import broadcast_revocation
from apps.keychain.roots import platform_error, root_destroy
from apps.keystores.base import KeystoreError
from apps.keystores.registry import platform_keystore

logger = logging.getLogger(__name__)

AnyKey = CustomerKey | TenantKey | ServiceKey


def _new_root(label: str) -> str:
    try:
        return platform_keystore().create_root_key(label=label)
    except KeystoreError as exc:
        raise platform_error(exc) from None


def _discard_root(handle: str) -> None:
    try:
        platform_keystore().destroy(handle)
    except KeystoreError:
        logger.exception("could not remove an orphaned root key after a failed create")


def customer_key_name(name: str) -> str:
    """`name` as a new customer key's name (any origin): stripped, 1-100 characters, unused."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValidationFailed("A key name is 1-100 characters.", code="invalid_name")
    if CustomerKey.objects.filter(name=name).exists():
        raise Conflict(f"A customer key named {name!r} exists already.", code="key_exists")
    return name


def next_version(key: AnyKey) -> int:
    """The number of the key's next version (its caller holds the key's row lock)."""
    last = key.versions.order_by("-version").values_list("version", flat=True).first()
    return (last or 0) + 1


def l2_version_wrap(
    l2: TenantKey, version: int, parent: CustomerKeyVersion, material: bytes | None = None
) -> TenantKeyVersion:
    """Store version `version` of the L2, new material (or `material`) wrapped under the L1
    version `parent`, in whichever keystore holds it: every origin wraps an L2 here."""
    l2v = TenantKeyVersion(key=l2, version=version, parent=parent)
    l2v.wrapped = l1_encrypt(
        parent, crypto.new_key() if material is None else material, l2_aad(l2v, l2)
    )
    l2v.save()
    return l2v


def _wrap_l3(
    l3: ServiceKey, version: int, parent: TenantKeyVersion, material: bytes
) -> ServiceKeyVersion:
    l3v = ServiceKeyVersion(key=l3, version=version, parent=parent)
    l3v.wrapped = crypto.seal(l2_material(parent), material, l3_aad(l3v, l3, parent))
    l3v.save()
    return l3v


def _primary(key: AnyKey) -> CustomerKeyVersion | TenantKeyVersion | ServiceKeyVersion:
    return key.versions.get(version=key.primary_version)


def customer_key_create(*, name: str, description: str = "") -> CustomerKey:
    """Create an L1 inside the HSM and its L2, wrapped by it."""
    name = customer_key_name(name)
    handle = _new_root(f"kcm/{tenant().slug}/{name}/v1")
    try:
        l1 = customer_key_insert(
            name=name, description=description, origin=Origin.HSM, version={"handle": handle}
        )
    except BaseException:
        _discard_root(handle)
        raise
    return l1


def customer_key_insert(
    *,
    name: str,
    description: str,
    origin: str,
    version: dict[str, Any],
    details: dict[str, Any] | None = None,
) -> CustomerKey:
    """Store a new L1 whose first version's key exists (`version`: where it is), its L2 with
    a first version wrapped by it, and the audit event: one transaction, any origin."""
    with transaction.atomic():
        l1 = CustomerKey.objects.create(name=name, description=description, origin=origin)
        l1v = CustomerKeyVersion.objects.create(key=l1, version=1, **version)
        l2 = TenantKey.objects.create(customer_key=l1)
        l2_version_wrap(l2, 1, l1v)
        audit_record(
            action="key.create",
            target=str(l1.pk),
            target_version=1,
            details={
                "level": "L1",
                "name": name,
                "origin": origin,
                **(details or {}),
                "tenant_key": str(l2.pk),
            },
        )
    return l1


def service_key_create(
    *, name: str, description: str = "", customer_key_id: UUID | None = None
) -> ServiceKey:
    """Create an L3 under the L2 of `customer_key_id` (or of the tenant's only usable L1)."""
    if ServiceKey.objects.filter(name=name).exists():
        raise Conflict(f"A service key named {name!r} exists already.", code="key_exists")
    if customer_key_id is None:
        usable = list(CustomerKey.objects.filter(state=KeyState.ENABLED)[:2])
        if len(usable) != 1:
            raise ValidationFailed(
                "Name the customer key (customer_key_id): this tenant has "
                + ("no usable customer key yet." if not usable else "several."),
                code="customer_key_required",
            )
        l1 = usable[0]
    else:
        l1 = CustomerKey.objects.filter(pk=customer_key_id).first()  # type: ignore[assignment]
        if l1 is None:
            raise KeyNotFound("No such customer key.")
    with transaction.atomic():
        l2 = TenantKey.objects.select_for_update().get(customer_key=l1)
        ensure_usable(l1, f"customer key {l1.name!r}")
        ensure_usable(l2, "tenant key")
        l3 = ServiceKey.objects.create(name=name, description=description, tenant_key=l2)
        l3v = _wrap_l3(l3, 1, _primary(l2), crypto.new_key())  # type: ignore[arg-type]
        audit_record(
            action="key.create",
            target=str(l3.pk),
            target_version=1,
            details={"level": "L3", "name": name, "parent": f"{l2.pk}/{l3v.parent.version}"},
        )
    return l3


def _locked(key_id: UUID | str) -> AnyKey:
    key = find_key(key_id)
    return type(key).objects.select_for_update().get(pk=key.pk)


def key_rotate(*, key_id: UUID | str) -> AnyKey:
    """Add a new primary version. Children stay wrapped by the old one, which keeps working
    until a rewrap job moves them."""
    with transaction.atomic():
        key = _locked(key_id)
        ensure_usable(key, "key")
        if isinstance(key, CustomerKey) and key.origin != Origin.HSM:
            # The material is the customer's: they bring the next version.
            raise InvalidKeyState(
                "A BYOK key rotates by importing new material as a new version; a HYOK key by "
                "linking another external key."
            )
        version = next_version(key)
        if isinstance(key, CustomerKey):
            handle = _new_root(f"kcm/{tenant().slug}/{key.name}/v{version}")
            try:
                CustomerKeyVersion.objects.create(key=key, version=version, handle=handle)
            except BaseException:
                _discard_root(handle)
                raise
        elif isinstance(key, TenantKey):
            l1 = key.customer_key
            ensure_usable(l1, "customer key")
            l2_version_wrap(key, version, _primary(l1))  # type: ignore[arg-type]
        else:
            l2 = key.tenant_key
            ensure_usable(l2.customer_key, "customer key")
            ensure_usable(l2, "tenant key")
            _wrap_l3(key, version, _primary(l2), crypto.new_key())  # type: ignore[arg-type]
        primary_version_promote(key, version)
    return key


def primary_version_promote(
    key: AnyKey, version: int, *, details: dict[str, Any] | None = None
) -> None:
    """Make `version` the key's primary (it wraps from now on), tell every process and record
    the rotation. The caller holds the key's row lock, in its transaction."""
    key.primary_version = version
    key.save(update_fields=["primary_version", "updated_at"])
    broadcast_revocation()
    audit_record(
        action="key.rotate",
        target=str(key.pk),
        target_version=version,
        details={"level": key.level, **(details or {})},
    )


def _transition(
    key_id: UUID | str, allowed_from: set[str], to: str, action: str, **fields: object
) -> AnyKey:
    with transaction.atomic():
        key = _locked(key_id)
        if key.state not in allowed_from:
            raise InvalidKeyState(f"The key is {key.state}; it cannot become {to} from there.")
        key.state = to
        for name, value in fields.items():
            setattr(key, name, value)
        key.save()
        broadcast_revocation()
        audit_record(
            action=action,
            target=str(key.pk),
            details={"level": key.level, "state": to, **{k: str(v) for k, v in fields.items()}},
        )
    return key


def key_enable(*, key_id: UUID | str) -> AnyKey:
    return _transition(
        key_id, {KeyState.DISABLED, KeyState.ENABLED}, KeyState.ENABLED, "key.enable"
    )


def key_disable(*, key_id: UUID | str) -> AnyKey:
    return _transition(
        key_id, {KeyState.ENABLED, KeyState.DISABLED}, KeyState.DISABLED, "key.disable"
    )


def deletion_date_after(pending_days: int) -> datetime:
    """When a deletion scheduled now with this waiting period comes due (a key's or an L1
    version's): KCM_DELETION_MIN_DAYS to KCM_DELETION_MAX_DAYS days from now."""
    low, high = settings.KCM_DELETION_MIN_DAYS, settings.KCM_DELETION_MAX_DAYS
    if not low <= pending_days <= high:
        raise ValidationFailed(
            f"pending_days must be between {low} and {high}.", code="invalid_pending_days"
        )
    return timezone.now() + timedelta(days=pending_days)


def key_schedule_deletion(*, key_id: UUID | str, pending_days: int) -> AnyKey:
    """Stop the key now and destroy it after `pending_days` unless the deletion is cancelled."""
    deletion_date = deletion_date_after(pending_days)
    if isinstance(find_key(key_id), TenantKey):
        raise InvalidKeyState("A tenant key is deleted with its customer key.")
    return _transition(
        key_id,
        {KeyState.ENABLED, KeyState.DISABLED},
        KeyState.PENDING_DELETION,
        "key.schedule_deletion",
        deletion_date=deletion_date,
    )


def key_cancel_deletion(*, key_id: UUID | str) -> AnyKey:
    """Cancel a scheduled deletion; the key comes back DISABLED, to be enabled deliberately."""
    return _transition(
        key_id,
        {KeyState.PENDING_DELETION},
        KeyState.DISABLED,
        "key.cancel_deletion",
        deletion_date=None,
    )


def _shred_l3(l3: ServiceKey, now: datetime) -> None:
    ServiceKeyVersion.objects.filter(key=l3).update(wrapped=b"", state=VersionState.DESTROYED)
    ServiceKey.objects.filter(pk=l3.pk).update(state=KeyState.DESTROYED, destroyed_at=now)


def key_destroy(*, key_id: UUID | str, now: datetime | None = None) -> AnyKey:
    """Destroy a key whose deletion window has passed, irrecoverably, with all below it."""
    now = now or timezone.now()
    with transaction.atomic():
        key = _locked(key_id)
        if (
            key.state != KeyState.PENDING_DELETION
            or key.deletion_date is None
            or key.deletion_date > now
        ):
            raise InvalidKeyState("Only a key whose deletion date has passed can be destroyed.")
        if isinstance(key, CustomerKey):
            for l1v in key.versions.exclude(state=VersionState.DESTROYED):
                root_destroy(l1v)
            key.versions.update(state=VersionState.DESTROYED)
            l2 = key.tenant_key
            TenantKeyVersion.objects.filter(key=l2).update(
                wrapped=b"", state=VersionState.DESTROYED
            )
            TenantKey.objects.filter(pk=l2.pk).update(state=KeyState.DESTROYED, destroyed_at=now)
            for l3 in ServiceKey.objects.filter(tenant_key=l2):
                _shred_l3(l3, now)
        elif isinstance(key, ServiceKey):
            _shred_l3(key, now)
        key.state = KeyState.DESTROYED
        key.destroyed_at = now
        key.save(update_fields=["state", "destroyed_at", "updated_at"])
        broadcast_revocation()
        audit_record(action="key.destroy", target=str(key.pk), details={"level": key.level})
    return key


def deletion_sweep(*, now: datetime | None = None) -> list[str]:
    """Destroy this tenant's keys whose deletion date has passed; returns their ids."""
    now = now or timezone.now()
    due: list[KeyBase] = [
        *CustomerKey.objects.filter(state=KeyState.PENDING_DELETION, deletion_date__lte=now),
        *ServiceKey.objects.filter(state=KeyState.PENDING_DELETION, deletion_date__lte=now),
    ]
    destroyed = []
    for key in due:
        try:
            key_destroy(key_id=key.pk, now=now)
        except Exception:
            logger.exception("destroying key %s failed; the next sweep retries", key.pk)
        else:
            destroyed.append(str(key.pk))
    return destroyed


# The lifecycle actions that take nothing but the key, by the name the API's URLs and the
# console's buttons give them (schedule-deletion takes its waiting period; rotate is
# apps/rotation's).
LIFECYCLE_ACTIONS = {
    "enable": key_enable,
    "disable": key_disable,
    "cancel-deletion": key_cancel_deletion,
}
