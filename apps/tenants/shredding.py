"""Crypto-shredding of terminated tenants: the platform-keystore objects of a tenant (its L1
versions' keys, its BYOK wrapping keys) outlive its dropped schema for the waiting period
(`KCM_DELETION_MAX_DAYS`, the longest a key's scheduled deletion may wait), so that a
termination can still be undone from a backup; then the deletion sweep destroys them, and every
L2 ever wrapped under them (in old row versions, WAL, backups) is unrecoverable."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import cast

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.core.signals import tenant_terminating
from apps.keystores.base import KeystoreError, RootKeyNotFound
from apps.keystores.registry import platform_keystore
from apps.tenants.models import Tenant, TerminatedRoot

logger = logging.getLogger(__name__)


def terminated_roots_schedule(*, tenant: Tenant, now: datetime) -> tuple[int, datetime]:
    """Record, in the caller's transaction and before the schema is dropped, every
    platform-keystore object of `tenant` for destruction after the waiting period; returns how
    many and when."""
    due = now + timedelta(days=settings.KCM_DELETION_MAX_DAYS)
    found: set[tuple[str, str]] = set()
    for _, objects in tenant_terminating.send(sender=Tenant, tenant=tenant):
        found.update(cast("list[tuple[str, str]]", objects))
    TerminatedRoot.objects.bulk_create(
        [TerminatedRoot(tenant=tenant, kind=k, handle=h, due_at=due) for k, h in sorted(found)],
        ignore_conflicts=True,
    )
    return len(found), due


def terminated_roots_sweep(*, now: datetime | None = None) -> dict[str, list[str]]:
    """Destroy the objects of terminated tenants whose waiting period has passed (a handle
    already gone counts as destroyed); returns the handles destroyed, per tenant slug. A
    keystore failure leaves the object for the next sweep."""
    now = now or timezone.now()
    due = TerminatedRoot.objects.select_related("tenant").filter(
        destroyed_at__isnull=True, due_at__lte=now
    )
    keystore = platform_keystore()
    done: dict[str, list[str]] = {}
    for root in due:
        try:
            if root.kind == TerminatedRoot.Kind.WRAPPING:
                keystore.destroy_wrapping_key(root.handle)
            else:
                keystore.destroy(root.handle)
        except RootKeyNotFound:
            pass
        except KeystoreError:
            logger.exception("destroying a terminated tenant's root key failed; retried later")
            continue
        TerminatedRoot.objects.filter(pk=root.pk).update(destroyed_at=timezone.now())
        done.setdefault(root.tenant.slug, []).append(root.handle)
    for slug, handles in done.items():
        with transaction.atomic():
            audit_record(action="tenant.shred", target=slug, details={"objects": len(handles)})
    return done
