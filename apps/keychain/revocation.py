"""Revocation: a change that may revoke access bumps the tenant's key epoch and tells every
process (the kill switch); a customer's key manager's answer changes an L1's state the same way.
"""

from __future__ import annotations

import logging
from uuid import UUID

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.audit.services import audit_record
from apps.keychain.cache import CHANNEL, key_cache
from apps.keychain.models import CustomerKey, KeyState
from apps.tenants.access import current_tenant
from apps.tenants.models import Tenant

logger = logging.getLogger(__name__)

# The states a key manager's answer may change: it never undoes what an administrator decided.
SYNCED_STATES = {KeyState.ENABLED, KeyState.UNAVAILABLE, KeyState.FORBIDDEN}


def broadcast_revocation() -> None:
    """Bump the tenant's key epoch and notify every process, both on commit of the caller's
    transaction (NOTIFY is transactional in PostgreSQL)."""
    current = current_tenant()
    Tenant.objects.filter(pk=current.pk).update(key_epoch=F("key_epoch") + 1)
    epoch = Tenant.objects.values_list("key_epoch", flat=True).get(pk=current.pk)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, f"{current.schema_name}:{epoch}"])
    # This process need not wait for its own notification.
    transaction.on_commit(lambda: key_cache().invalidate(current.schema_name, epoch))


def external_state_apply(key_id: UUID, state: str, reason: str) -> None:
    """Move the L1 to `state` (if the sync may, and it is a change), broadcast, record."""
    reason = reason[:300]
    with transaction.atomic():
        l1 = CustomerKey.objects.select_for_update().filter(pk=key_id).first()
        if (
            l1 is None
            or l1.state not in SYNCED_STATES
            or (l1.state, l1.state_reason) == (state, reason)
        ):
            return
        previous = l1.state
        if previous == state:  # the same state for another reason: nothing to revoke
            CustomerKey.objects.filter(pk=key_id).update(state_reason=reason)
            return
        l1.state, l1.state_reason = state, reason
        if state == KeyState.DESTROYED:
            l1.destroyed_at = timezone.now()
        l1.save()
        broadcast_revocation()
        audit_record(
            action="key.external_state",
            target=str(l1.pk),
            details={"from": previous, "to": state, "reason": reason},
        )
    logger.warning("HYOK key %s: %s -> %s (%s)", key_id, previous, state, reason)
