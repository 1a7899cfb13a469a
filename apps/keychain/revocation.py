"""Revocation: a change that may revoke access bumps the tenant's key epoch and tells every
process (the kill switch); a customer's key manager's answer changes an L1's state the same way.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from uuid import UUID

from django.conf import settings
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
    """Move the L1 to `state` (if the sync may, and it is a change), broadcast, record. Any
    answer but "no such key" ends a wait for its confirmation."""
    with transaction.atomic():
        l1 = CustomerKey.objects.select_for_update().filter(pk=key_id).first()
        if l1 is None or l1.state not in SYNCED_STATES:
            return
        if l1.missing_since is not None and state != KeyState.UNAVAILABLE:
            CustomerKey.objects.filter(pk=key_id).update(missing_since=None)
        _apply(l1, state, reason)


def external_key_missing(key_id: UUID, reason: str, *, confirming: bool) -> None:
    """The key manager says it has no such key. One answer is not enough to destroy the L1
    for good (a wrong partition, a manager restored from an old backup, a replica behind): the
    first makes it UNAVAILABLE and starts the clock; only a sync (`confirming`) at least
    KCM_HYOK_DESTROY_CONFIRM_SECONDS later that gets the same answer makes it DESTROYED. A
    manager that says explicitly that the key was destroyed is applied at once
    (`external_state_apply` with DESTROYED)."""
    delay = timedelta(seconds=settings.KCM_HYOK_DESTROY_CONFIRM_SECONDS)
    now = timezone.now()
    with transaction.atomic():
        l1 = CustomerKey.objects.select_for_update().filter(pk=key_id).first()
        if l1 is None or l1.state not in SYNCED_STATES:
            return
        since = l1.missing_since
        if since is not None and confirming and now - since >= delay:
            _apply(l1, KeyState.DESTROYED, f"{reason} (confirmed since {since:%Y-%m-%d %H:%M} UTC)")
            return
        if since is None:
            since = now
            CustomerKey.objects.filter(pk=key_id).update(missing_since=since)
        _apply(
            l1,
            KeyState.UNAVAILABLE,
            f"{reason}; not confirmed yet: a sync from {since + delay:%Y-%m-%d %H:%M:%S} UTC "
            "that gets the same answer makes the key destroyed",
        )


def _apply(l1: CustomerKey, state: str, reason: str) -> None:
    """In the caller's transaction, with `l1` locked."""
    reason = reason[:300]
    if (l1.state, l1.state_reason) == (state, reason):
        return
    previous = l1.state
    if previous == state:  # the same state for another reason: nothing to revoke
        CustomerKey.objects.filter(pk=l1.pk).update(state_reason=reason)
        return
    l1.state, l1.state_reason = state, reason
    if state == KeyState.DESTROYED:
        l1.destroyed_at = timezone.now()
    l1.save(update_fields=["state", "state_reason", "destroyed_at", "updated_at"])
    broadcast_revocation()
    audit_record(
        action="key.external_state",
        target=str(l1.pk),
        details={"from": previous, "to": state, "reason": reason},
    )
    transaction.on_commit(
        lambda: logger.warning("HYOK key %s: %s -> %s (%s)", l1.pk, previous, state, reason)
    )
