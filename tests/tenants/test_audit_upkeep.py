"""The beat's audit upkeep (apps.tenants.tasks) reaches the platform's and every live tenant's
log, a suspended tenant's too: pending events are chained, moved heads are signed once."""

from __future__ import annotations

from typing import Any

from django_tenants.utils import schema_context, tenant_context

from apps.audit.models import AuditCheckpoint, AuditEvent, AuditPending
from apps.audit.services import audit_record
from apps.tenants import services, tasks


def test_the_seal_chains_what_every_live_schema_left_pending(world: Any) -> None:
    services.tenant_suspend(tenant=world.tenants["globex"], reason="unpaid")
    for schema in ("public", "t_acme", "t_globex"):
        with schema_context(schema):
            audit_record(action="test.pending", target=schema, chained=False)

    assert tasks.audit_seal_all() >= 3

    for schema in ("public", "t_acme", "t_globex"):
        with schema_context(schema):
            assert not AuditPending.objects.exists()
            assert AuditEvent.objects.filter(action="test.pending", target=schema).exists()


def test_checkpoints_sign_each_moved_head_once(world: Any) -> None:
    acme = world.tenants["acme"]
    with tenant_context(acme):
        audit_record(action="test.head")
        head = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()

    assert tasks.audit_checkpoint_all() >= 1
    with tenant_context(acme):
        signed = AuditCheckpoint.objects.order_by("-seq").first()
        assert signed is not None and signed.seq == head

    assert tasks.audit_checkpoint_all() == 0  # nothing moved since
