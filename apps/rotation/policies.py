"""Rotation policies: when keys are due. A tenant default per level, overridden per key.

A key is due when its primary version is older than its rotation period, or (L3) when the
primary version's reserved encryptions reach its maximum usage count. Independently of any
policy, an L3 is always due at SAFETY_FRACTION of the GCM limit (KCM_GCM_USAGE_LIMIT), so that
the sweep rotates it before data-key requests start failing with usage_limit_reached.
"""

from __future__ import annotations

from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.core.errors import ValidationFailed
from apps.keychain.chain import find_key
from apps.rotation.models import PolicyLevel, RotationPolicy
from apps.rotation.platform.models import TenantRotationCheck
from apps.tenants.access import current_tenant

MAX_PERIOD_DAYS = 36500
SAFETY_FRACTION = 0.9


def usage_safety_limit() -> int:
    """Reserved encryptions at which an L3 is due whatever its policy says."""
    return max(1, int(settings.KCM_GCM_USAGE_LIMIT * SAFETY_FRACTION))


def _check_soon() -> None:
    """Ask the next sweep to look at this tenant's keys: a policy changed (see
    TenantRotationCheck)."""
    TenantRotationCheck.objects.update_or_create(
        tenant_id=current_tenant().pk, defaults={"next_check_at": timezone.now()}
    )


def _validate(level: str, period_days: int | None, max_usage: int | None) -> None:
    if level not in PolicyLevel.values:
        raise ValidationFailed("level must be L1, L2 or L3.", code="invalid_level")
    if period_days is not None and not 1 <= period_days <= MAX_PERIOD_DAYS:
        raise ValidationFailed(
            f"period_days must be between 1 and {MAX_PERIOD_DAYS}.", code="invalid_period"
        )
    if max_usage is not None:
        if level != PolicyLevel.L3:
            raise ValidationFailed(
                "max_usage applies to service keys (L3) only.", code="invalid_max_usage"
            )
        if not 1 <= max_usage <= settings.KCM_GCM_USAGE_LIMIT:
            raise ValidationFailed(
                f"max_usage must be between 1 and {settings.KCM_GCM_USAGE_LIMIT}.",
                code="invalid_max_usage",
            )


def rotation_default_set(
    *, level: str, period_days: int | None, max_usage: int | None = None
) -> RotationPolicy:
    """Set the tenant's default policy for `level` (None fields: no automatic rotation)."""
    _validate(level, period_days, max_usage)
    with transaction.atomic():
        policy, _ = RotationPolicy.objects.update_or_create(
            key_id=None,
            level=level,
            defaults={"period_days": period_days, "max_usage": max_usage},
        )
        audit_record(
            action="rotation.policy.set",
            target=f"default:{level}",
            details={"period_days": period_days, "max_usage": max_usage},
        )
        _check_soon()
    return policy


def rotation_default_clear(*, level: str) -> None:
    _validate(level, None, None)
    with transaction.atomic():
        RotationPolicy.objects.filter(key_id=None, level=level).delete()
        audit_record(action="rotation.policy.clear", target=f"default:{level}")
        _check_soon()


def rotation_policy_set(
    *, key_id: UUID | str, period_days: int | None, max_usage: int | None = None
) -> RotationPolicy:
    """Set a key's own policy; a None field inherits the tenant default for its level."""
    key = find_key(key_id)
    level = str(key.level)
    _validate(level, period_days, max_usage)
    with transaction.atomic():
        policy, _ = RotationPolicy.objects.update_or_create(
            key_id=key.pk,
            defaults={"level": level, "period_days": period_days, "max_usage": max_usage},
        )
        audit_record(
            action="rotation.policy.set",
            target=str(key.pk),
            details={"level": level, "period_days": period_days, "max_usage": max_usage},
        )
        _check_soon()
    return policy


def rotation_policy_clear(*, key_id: UUID | str) -> None:
    key = find_key(key_id)
    with transaction.atomic():
        RotationPolicy.objects.filter(key_id=key.pk).delete()
        audit_record(action="rotation.policy.clear", target=str(key.pk))
        _check_soon()
