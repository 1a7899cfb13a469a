"""Retention: events older than KCM_AUDIT_RETENTION_DAYS are archived, then pruned.

Pruning never happens without a successful archive (an export with its signed manifest), and
it leaves a signed anchor checkpoint at the last pruned event, from which the remaining chain
still verifies.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.audit import chain, export
from apps.audit.models import AuditEvent, ExportState
from apps.audit.services import audit_record, checkpoint_create


def audit_prune(*, now: Any = None) -> dict[str, Any]:
    """Archive and prune this schema's events older than the retention period."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.KCM_AUDIT_RETENTION_DAYS)
    head = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
    last = (
        AuditEvent.objects.filter(occurred_at__lt=cutoff)
        .order_by("-seq")
        .values("seq", "hash")
        .first()
    )
    if last is None:
        return {"pruned": 0}
    if last["seq"] == head:
        last = (
            AuditEvent.objects.filter(seq=head - 1).values("seq", "hash").first()
        )  # keep the head
        if last is None:
            return {"pruned": 0}
    job = export.export_request(
        filters={"until": chain.timestamp(cutoff)}, format="jsonl", requested_by="system:retention"
    )
    job = export.export_run(export_id=str(job.pk))
    if job.state != ExportState.SUCCEEDED or job.manifest.get("last_seq", 0) < last["seq"]:
        raise RuntimeError("the archive did not cover the events to prune; nothing was pruned")
    with transaction.atomic():
        checkpoint_create(at=last, anchor=True)
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL kcm.audit_prune = 'on'")
            cursor.execute("DELETE FROM audit_auditevent WHERE seq <= %s", [last["seq"]])
            pruned = cursor.rowcount
        audit_record(
            action="audit.prune",
            details={"pruned": pruned, "through_seq": last["seq"], "archive": str(job.pk)},
        )
    return {"pruned": pruned, "through_seq": last["seq"], "archive": str(job.pk)}
